//! Instructions executed and kernel calls made per path, counted rather than timed: a small
//! BPF interpreter runs the program's bytecode, as aya links it (subprograms appended, map
//! references resolved) before the verifier, on the path's frame, reading the real maps of
//! the loaded program through bpf(2). A count is the same on every run of the same
//! program, state and frame, whatever the machine is doing (up to a branch or two on
//! whether the coarse clock ticked since the setup: ±2 instructions), so a growth of 10 %
//! on a hot path fails the bench (`reference.json`) where timing could not see it.
//!
//! What is counted:
//! - `instructions`: every BPF instruction executed from entry to exit (a 16-byte
//!   `ld_imm64` counts once), subprograms included.
//! - `kernel_calls`: helper calls the program still makes after the verifier. Lookups in
//!   array maps are not counted: the verifier inlines them into a bounds check and an
//!   address computation (their instructions are not counted either; they are the
//!   kernel's).
//!
//! The interpreter does not write to the kernel: values the program changes, entries it
//! inserts or deletes and ring-buffer records live in an overlay for the one run, so the
//! count leaves the maps as the timing found them. Its verdict is checked against the
//! kernel's for the same frame: an interpreter that took another path would be caught.

use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd, RawFd},
};

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{MapInfo, MapType};
use aya_obj::generated::bpf_insn;

/// Where the frame lives in the interpreter's address space: below 4 GiB, because the
/// program reads `xdp_md.data` as a 32-bit field (the verifier widens it in the kernel).
const PKT_BASE: u64 = 0x0100_0000;
/// Region numbers (the upper 32 bits of an address) of the context and the stack.
const CTX: u64 = 1;
const STACK: u64 = 2;
/// BPF allows eight nested calls of 512-byte frames.
const FRAME: u64 = 512;
const MAX_DEPTH: usize = 8;
/// A program that runs longer than this is a bug of the interpreter (the verifier bounds
/// the real one far below).
const MAX_STEPS: u64 = 1_000_000;
/// Map handles (what `ld_imm64` of a map gives) are tagged in their upper bits.
const MAP_TAG: u64 = 0xff00_0000_0000_0000;

const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_RINGBUF_RESERVE: u32 = 131;
const BPF_RINGBUF_SUBMIT: u32 = 132;
const BPF_RINGBUF_DISCARD: u32 = 133;
const BPF_KTIME_GET_COARSE_NS: u32 = 160;

/// One path's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counted {
    pub instructions: u64,
    pub kernel_calls: u64,
    /// The XDP action the interpreter's run returned.
    pub action: u32,
}

/// A run's counts with the executions of each instruction (indexed like the program).
pub(crate) struct Profiled {
    pub counted: Counted,
    pub hits: Vec<u64>,
    /// The kernel calls, in order: the helper and the map it was asked about.
    pub calls: Vec<String>,
}

/// A map of the loaded program, read through its descriptor.
struct KernelMap {
    /// As the kernel has it (at most 15 bytes of the object's).
    name: String,
    fd: aya::maps::MapFd,
    kind: MapType,
    key_size: usize,
    value_size: usize,
}

impl KernelMap {
    fn per_cpu(&self) -> bool {
        matches!(
            self.kind,
            MapType::PerCpuArray | MapType::PerCpuHash | MapType::LruPerCpuHash
        )
    }

    /// Inlined by the verifier: no kernel call.
    fn inlined(&self) -> bool {
        matches!(self.kind, MapType::Array | MapType::PerCpuArray)
    }

    /// The value of `key` (CPU 0's, for a per-CPU map), if any.
    fn lookup(&self, key: &[u8], cpus: usize) -> Option<Vec<u8>> {
        let stride = self.value_size.next_multiple_of(8);
        let len = if self.per_cpu() {
            stride * cpus
        } else {
            self.value_size
        };
        let mut value = vec![0u8; len];
        // union bpf_attr for BPF_MAP_LOOKUP_ELEM: map_fd, (pad), key, value, flags.
        let mut attr = [0u64; 4];
        attr[0] = u64::from(self.fd.as_fd().as_raw_fd() as u32);
        attr[1] = key.as_ptr() as u64;
        attr[2] = value.as_mut_ptr() as u64;
        // SAFETY: `attr` is a BPF_MAP_LOOKUP_ELEM attribute whose key and value point at
        // buffers of the map's key size and (per-CPU) value size, alive for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                1, // BPF_MAP_LOOKUP_ELEM
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        (r == 0).then(|| {
            value.truncate(self.value_size);
            value
        })
    }
}

/// The program's bytecode and its maps, ready to run frames.
pub(crate) struct Interpreter {
    insns: Vec<bpf_insn>,
    /// Where each function of the object landed in `insns`: (first instruction, length,
    /// name, its byte address in its section), for `LAZARET_COUNT_PROFILE`.
    spans: Vec<(usize, usize, String, u64)>,
    /// By the handle `ld_imm64` gives (its index).
    maps: Vec<KernelMap>,
    cpus: usize,
}

impl Interpreter {
    /// `elf` is the object `program` was loaded from; `map_ids` are the maps the kernel
    /// gave the loaded program.
    pub(crate) fn new(elf: &[u8], program: &str, map_ids: &[u32]) -> Result<Interpreter> {
        let mut obj = aya_obj::Object::parse(elf).context("parsing the program's object")?;
        let mut by_name: HashMap<String, KernelMap> = HashMap::new();
        for id in map_ids {
            let info = MapInfo::from_id(*id).context("a map of the loaded program")?;
            let name = info.name_as_str().unwrap_or_default().to_string();
            by_name.insert(
                name.clone(),
                KernelMap {
                    name,
                    fd: info.fd()?,
                    kind: info.map_type()?,
                    key_size: info.key_size() as usize,
                    value_size: info.value_size() as usize,
                },
            );
        }
        // Handles in the order of the object's map names; the kernel names maps with at
        // most 15 bytes of theirs.
        let mut names: Vec<String> = obj.maps.keys().cloned().collect();
        names.sort();
        let mut maps = Vec::new();
        let mut handles = Vec::new();
        for name in &names {
            let short: String = name.chars().take(15).collect();
            let Some(m) = by_name.remove(&short) else {
                continue;
            };
            handles.push((name.clone(), maps.len() as RawFd));
            maps.push(m);
        }
        let text: std::collections::HashSet<usize> =
            obj.functions.keys().map(|(section, _)| *section).collect();
        let objmaps: Vec<(String, RawFd, aya_obj::Map)> = handles
            .iter()
            .filter_map(|(n, fd)| obj.maps.get(n).map(|m| (n.clone(), *fd, m.clone())))
            .collect();
        obj.relocate_maps(objmaps.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)), &text)
            .map_err(|e| anyhow::anyhow!("relocating maps: {e:?}"))?;
        obj.relocate_calls(&text)
            .map_err(|e| anyhow::anyhow!("relocating calls: {e}"))?;
        let prog = obj
            .programs
            .get(program)
            .with_context(|| format!("no program {program} in the object"))?;
        let insns = obj
            .functions
            .get(&prog.function_key())
            .context("the program's function")?
            .instructions
            .clone();
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let spans = spans(elf, &insns, prog.function_key())?;
        Ok(Interpreter {
            insns,
            spans,
            maps,
            cpus,
        })
    }

    /// With `LAZARET_COUNT_PROFILE` set: the instructions `c` executed, by function and
    /// instruction, as `count<TAB>function<TAB>byte offset in its section` lines, most
    /// executed first; join them with `llvm-objdump -d -l` of the object for source lines.
    pub(crate) fn profile(&self, c: &Profiled) -> String {
        let mut rows: Vec<(u64, &str, u64)> = Vec::new();
        for (pc, n) in c.hits.iter().enumerate().filter(|(_, n)| **n > 0) {
            let (name, at) = self
                .spans
                .iter()
                .find(|(start, len, ..)| (*start..start + len).contains(&pc))
                .map_or(("?", 0), |(start, _, name, addr)| {
                    (name.as_str(), addr + 8 * (pc - start) as u64)
                });
            rows.push((*n, name, at));
        }
        rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(&b.2)));
        rows.iter()
            .map(|(n, name, at)| format!("{n}\t{name}\t{at:#x}\n"))
            .collect()
    }

    /// [`Self::new`] for the loaded `prog`, whose maps the kernel lists.
    pub(crate) fn of(elf: &[u8], program: &str, prog: &aya::programs::Xdp) -> Result<Interpreter> {
        let ids = prog
            .info()?
            .map_ids()?
            .context("the kernel does not list the program's maps")?;
        Interpreter::new(elf, program, &ids)
    }

    /// [`Self::run`], checked with [`agrees`].
    pub(crate) fn checked(
        &self,
        frame: &[u8],
        ifindex: u32,
        kernel: u32,
        what: &str,
    ) -> Result<Profiled> {
        agrees(self.run(frame, ifindex)?, kernel, what)
    }

    /// Runs the program once on `frame`, arriving on `ifindex`.
    pub(crate) fn run(&self, frame: &[u8], ifindex: u32) -> Result<Profiled> {
        let mut m = Machine::new(self, frame, ifindex);
        let counted = m.run()?;
        Ok(Profiled {
            counted,
            hits: m.hits,
            calls: m.calls,
        })
    }
}

/// `p`, unless its run did not reach `kernel`, the kernel's action on the same frame: a
/// count of another path than the kernel's would be worthless.
pub(crate) fn agrees(p: Profiled, kernel: u32, what: &str) -> Result<Profiled> {
    ensure!(
        p.counted.action == kernel,
        "{what}: the instruction counter's run returned {} where the kernel's returned {kernel}",
        p.counted.action
    );
    Ok(p)
}

/// The functions of the object as the linker laid them out in `linked`: the program's own
/// first, then each subprogram it calls, appended whole (their opcodes are unchanged by
/// relocation, so each is found by them).
fn spans(
    elf: &[u8],
    linked: &[bpf_insn],
    main: (usize, u64),
) -> Result<Vec<(usize, usize, String, u64)>> {
    let obj = aya_obj::Object::parse(elf).context("parsing the program's object")?;
    let main_fn = obj.functions.get(&main).context("the program's function")?;
    let mut out = vec![(
        0,
        main_fn.instructions.len(),
        main_fn.name.clone(),
        main_fn.address,
    )];
    let mut at = main_fn.instructions.len();
    while at < linked.len() {
        let found = obj.functions.values().find(|f| {
            let n = f.instructions.len();
            n > 0
                && at + n <= linked.len()
                && f.instructions
                    .iter()
                    .zip(&linked[at..at + n])
                    .all(|(a, b)| a.code == b.code)
                && !out.iter().any(|(_, _, name, _)| *name == f.name)
        });
        let Some(f) = found else {
            break;
        };
        out.push((at, f.instructions.len(), f.name.clone(), f.address));
        at += f.instructions.len();
    }
    Ok(out)
}

/// Memory the program can address besides the frame, the context and the stack: map
/// values and ring-buffer records, by region number (from 3).
struct Machine<'a> {
    it: &'a Interpreter,
    pkt: Vec<u8>,
    ctx: Vec<u8>,
    stack: Vec<u8>,
    regions: Vec<Vec<u8>>,
    /// (map handle, key) → the region of its value for this run; `None`: deleted.
    values: HashMap<(usize, Vec<u8>), Option<usize>>,
    counted: Counted,
    hits: Vec<u64>,
    calls: Vec<String>,
}

struct Frame {
    ret: usize,
    saved: [u64; 4],
}

impl<'a> Machine<'a> {
    fn new(it: &'a Interpreter, frame: &[u8], ifindex: u32) -> Machine<'a> {
        let start = PKT_BASE as u32;
        let end = start + frame.len() as u32;
        let mut ctx = Vec::new();
        for field in [start, end, start, ifindex, 0, 0] {
            ctx.extend_from_slice(&field.to_le_bytes());
        }
        Machine {
            it,
            pkt: frame.to_vec(),
            ctx,
            stack: vec![0; (FRAME as usize) * MAX_DEPTH],
            regions: Vec::new(),
            values: HashMap::new(),
            counted: Counted::default(),
            hits: vec![0; it.insns.len()],
            calls: Vec::new(),
        }
    }

    /// The bytes at `addr..addr+len`.
    fn mem(&mut self, addr: u64, len: usize) -> Result<&mut [u8]> {
        let (region, off) = (addr >> 32, (addr & 0xffff_ffff) as usize);
        let buf: &mut Vec<u8> = match region {
            0 => {
                let off = (addr.checked_sub(PKT_BASE)).context("address below the frame")?;
                let off = off as usize;
                ensure!(
                    off + len <= self.pkt.len(),
                    "read past the frame at {addr:#x}"
                );
                return Ok(&mut self.pkt[off..off + len]);
            }
            CTX => &mut self.ctx,
            STACK => &mut self.stack,
            r => self
                .regions
                .get_mut((r - 3) as usize)
                .with_context(|| format!("no memory at {addr:#x}"))?,
        };
        ensure!(off + len <= buf.len(), "access past a region at {addr:#x}");
        Ok(&mut buf[off..off + len])
    }

    fn load(&mut self, addr: u64, len: usize) -> Result<u64> {
        let b = self.mem(addr, len)?;
        let mut v = [0u8; 8];
        v[..len].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    }

    fn store(&mut self, addr: u64, len: usize, value: u64) -> Result<()> {
        let b = self.mem(addr, len)?;
        b.copy_from_slice(&value.to_le_bytes()[..len]);
        Ok(())
    }

    fn region(&mut self, bytes: Vec<u8>) -> u64 {
        self.regions.push(bytes);
        (self.regions.len() as u64 + 2) << 32
    }

    fn map(&self, handle: u64) -> Result<(usize, &'a KernelMap)> {
        ensure!(handle & MAP_TAG == MAP_TAG, "not a map: {handle:#x}");
        let i = (handle & !MAP_TAG) as usize;
        Ok((i, self.it.maps.get(i).context("unknown map")?))
    }

    /// The address of the value of map `i`'s entry 0 (a global's section), fetched once.
    fn global(&mut self, i: usize) -> Result<u64> {
        let key = 0u32.to_le_bytes().to_vec();
        if let Some(Some(region)) = self.values.get(&(i, key.clone())) {
            return Ok((*region as u64 + 3) << 32);
        }
        let map = self.it.maps.get(i).context("unknown map")?;
        let value = map
            .lookup(&key, self.it.cpus)
            .context("a global's map has no entry 0")?;
        let addr = self.region(value);
        self.values
            .insert((i, key), Some(((addr >> 32) - 3) as usize));
        Ok(addr)
    }

    fn helper(&mut self, id: u32, r: &[u64; 11]) -> Result<u64> {
        match id {
            BPF_MAP_LOOKUP_ELEM => {
                let (i, map) = self.map(r[1])?;
                if !map.inlined() {
                    self.counted.kernel_calls += 1;
                    self.calls.push(format!("lookup {}", map.name));
                }
                let key = self.mem(r[2], map.key_size)?.to_vec();
                if let Some(v) = self.values.get(&(i, key.clone())) {
                    return Ok(v.map_or(0, |region| (region as u64 + 3) << 32));
                }
                match map.lookup(&key, self.it.cpus) {
                    Some(value) => {
                        let addr = self.region(value);
                        self.values
                            .insert((i, key), Some(((addr >> 32) - 3) as usize));
                        Ok(addr)
                    }
                    None => Ok(0),
                }
            }
            BPF_MAP_UPDATE_ELEM => {
                self.counted.kernel_calls += 1;
                let (i, map) = self.map(r[1])?;
                self.calls.push(format!("update {}", map.name));
                let key = self.mem(r[2], map.key_size)?.to_vec();
                let value = self.mem(r[3], map.value_size)?.to_vec();
                let exists = match self.values.get(&(i, key.clone())) {
                    Some(v) => v.is_some(),
                    None => map.lookup(&key, self.it.cpus).is_some(),
                };
                // BPF_NOEXIST / BPF_EXIST.
                match (r[4], exists) {
                    (1, true) => return Ok((-17i64) as u64),
                    (2, false) => return Ok((-2i64) as u64),
                    _ => {}
                }
                let addr = self.region(value);
                self.values
                    .insert((i, key), Some(((addr >> 32) - 3) as usize));
                Ok(0)
            }
            BPF_MAP_DELETE_ELEM => {
                self.counted.kernel_calls += 1;
                let (i, map) = self.map(r[1])?;
                self.calls.push(format!("delete {}", map.name));
                let key = self.mem(r[2], map.key_size)?.to_vec();
                self.values.insert((i, key), None);
                Ok(0)
            }
            BPF_RINGBUF_RESERVE => {
                self.counted.kernel_calls += 1;
                self.calls.push("ringbuf reserve".into());
                Ok(self.region(vec![0; r[2] as usize]))
            }
            BPF_RINGBUF_SUBMIT | BPF_RINGBUF_DISCARD => {
                self.counted.kernel_calls += 1;
                self.calls.push("ringbuf submit or discard".into());
                Ok(0)
            }
            BPF_KTIME_GET_COARSE_NS => {
                self.counted.kernel_calls += 1;
                self.calls.push("ktime_get_coarse_ns".into());
                let mut t = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: `t` is a valid timespec for the call to fill.
                let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) };
                ensure!(r == 0, "clock_gettime failed");
                Ok(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64)
            }
            other => bail!("helper {other} is not interpreted (add it to count.rs)"),
        }
    }

    fn run(&mut self) -> Result<Counted> {
        let insns = &self.it.insns;
        let mut r = [0u64; 11];
        r[1] = CTX << 32;
        r[10] = (STACK << 32) + FRAME;
        let mut frames: Vec<Frame> = Vec::new();
        let mut pc = 0usize;
        loop {
            ensure!(
                self.counted.instructions < MAX_STEPS,
                "more than {MAX_STEPS} instructions"
            );
            let ins = insns.get(pc).context("jumped out of the program")?;
            self.counted.instructions += 1;
            self.hits[pc] += 1;
            let (code, dst, src) = (ins.code, ins.dst_reg() as usize, ins.src_reg() as usize);
            let (off, imm) = (i64::from(ins.off), i64::from(ins.imm));
            pc += 1;
            let class = code & 7;
            match class {
                // ALU (32-bit), ALU64.
                4 | 7 => {
                    let wide = class == 7;
                    let operand = if code & 8 != 0 { r[src] } else { imm as u64 };
                    let a = r[dst];
                    let v = alu(code & 0xf0, a, operand, off, imm, wide, code & 8 != 0)?;
                    // END keeps the width it names, not the class's.
                    r[dst] = if wide || code & 0xf0 == 0xd0 {
                        v
                    } else {
                        v & 0xffff_ffff
                    };
                }
                // JMP, JMP32.
                5 | 6 => {
                    let op = code & 0xf0;
                    match op {
                        0x00 => {
                            // JA (JMP32's `gotol` takes its offset from imm).
                            let d = if class == 6 { imm } else { off };
                            pc = (pc as i64 + d) as usize;
                        }
                        0x80 => {
                            if src == 1 {
                                ensure!(frames.len() + 1 < MAX_DEPTH, "calls nested too deep");
                                frames.push(Frame {
                                    ret: pc,
                                    saved: [r[6], r[7], r[8], r[9]],
                                });
                                r[10] += FRAME;
                                pc = (pc as i64 + imm) as usize;
                            } else {
                                r[0] = self.helper(imm as u32, &r)?;
                                // Caller-saved registers are clobbered by a call.
                                for reg in &mut r[1..6] {
                                    *reg = 0xdead_beef_dead_beef;
                                }
                            }
                        }
                        0x90 => match frames.pop() {
                            None => {
                                self.counted.action = r[0] as u32;
                                return Ok(self.counted);
                            }
                            Some(f) => {
                                r[6..10].copy_from_slice(&f.saved);
                                r[10] -= FRAME;
                                pc = f.ret;
                            }
                        },
                        _ => {
                            let b = if code & 8 != 0 { r[src] } else { imm as u64 };
                            let (a, b) = if class == 6 {
                                (r[dst] & 0xffff_ffff, b & 0xffff_ffff)
                            } else {
                                (r[dst], b)
                            };
                            let (sa, sb) = if class == 6 {
                                (i64::from(a as u32 as i32), i64::from(b as u32 as i32))
                            } else {
                                (a as i64, b as i64)
                            };
                            let taken = match op {
                                0x10 => a == b,
                                0x20 => a > b,
                                0x30 => a >= b,
                                0x40 => a & b != 0,
                                0x50 => a != b,
                                0x60 => sa > sb,
                                0x70 => sa >= sb,
                                0xa0 => a < b,
                                0xb0 => a <= b,
                                0xc0 => sa < sb,
                                0xd0 => sa <= sb,
                                _ => bail!("unknown jump {code:#x} at {}", pc - 1),
                            };
                            if taken {
                                pc = (pc as i64 + off) as usize;
                            }
                        }
                    }
                }
                // LD: only the 64-bit immediate (a constant or a map).
                0 => {
                    ensure!(code == 0x18, "unsupported load {code:#x} at {}", pc - 1);
                    let next = insns.get(pc).context("a truncated ld_imm64")?;
                    pc += 1;
                    let lo = u64::from(ins.imm as u32);
                    let hi = u64::from(next.imm as u32);
                    r[dst] = match src {
                        0 => lo | (hi << 32),
                        1 => MAP_TAG | lo,
                        // A global (.rodata, .bss): `hi` bytes into the value of its
                        // one-entry array map.
                        2 => self.global(lo as usize)? + hi,
                        s => bail!("ld_imm64 of kind {s} is not interpreted"),
                    };
                }
                // LDX, ST, STX.
                1..=3 => {
                    let len = match code & 0x18 {
                        0x00 => 4,
                        0x08 => 2,
                        0x10 => 1,
                        _ => 8,
                    };
                    let mode = code & 0xe0;
                    match (class, mode) {
                        (1, 0x60) => {
                            r[dst] = self.load(r[src].wrapping_add(off as u64), len)?;
                        }
                        (1, 0x80) => {
                            // LDX with sign extension.
                            let v = self.load(r[src].wrapping_add(off as u64), len)?;
                            let shift = 64 - 8 * len as u32;
                            r[dst] = (((v << shift) as i64) >> shift) as u64;
                        }
                        (2, 0x60) => {
                            self.store(r[dst].wrapping_add(off as u64), len, imm as u64)?;
                        }
                        (3, 0x60) => self.store(r[dst].wrapping_add(off as u64), len, r[src])?,
                        (3, 0xc0) => {
                            let addr = r[dst].wrapping_add(off as u64);
                            let old = self.load(addr, len)?;
                            let fetch = imm & 1 != 0;
                            let new = match imm & !1 {
                                0x00 => old.wrapping_add(r[src]),
                                0x40 => old | r[src],
                                0x50 => old & r[src],
                                0xa0 => old ^ r[src],
                                0xe0 => r[src],
                                0xf0 => {
                                    if old == r[0] {
                                        r[src]
                                    } else {
                                        old
                                    }
                                }
                                _ => bail!("unknown atomic {imm:#x}"),
                            };
                            self.store(addr, len, new)?;
                            if imm == 0xf1 {
                                r[0] = old;
                            } else if fetch {
                                r[src] = old;
                            }
                        }
                        _ => bail!("unsupported memory access {code:#x} at {}", pc - 1),
                    }
                }
                _ => bail!("unknown instruction class {code:#x}"),
            }
        }
    }
}

/// One ALU operation; `wide`: 64-bit.
fn alu(op: u8, a: u64, b: u64, off: i64, imm: i64, wide: bool, reg: bool) -> Result<u64> {
    let (a32, b32) = (a & 0xffff_ffff, b & 0xffff_ffff);
    let (x, y) = if wide { (a, b) } else { (a32, b32) };
    let bits = if wide { 64 } else { 32 };
    let signed = |v: u64| -> i64 {
        if wide {
            v as i64
        } else {
            i64::from(v as u32 as i32)
        }
    };
    Ok(match op {
        0x00 => x.wrapping_add(y),
        0x10 => x.wrapping_sub(y),
        0x20 => x.wrapping_mul(y),
        0x30 if off == 1 => {
            if y == 0 {
                0
            } else {
                signed(x).wrapping_div(signed(y)) as u64
            }
        }
        0x30 => x.checked_div(y).unwrap_or(0),
        0x40 => x | y,
        0x50 => x & y,
        0x60 => x.wrapping_shl((y % bits) as u32),
        0x70 => x.wrapping_shr((y % bits) as u32),
        0x80 => (x as i64).wrapping_neg() as u64,
        0x90 if off == 1 => {
            if y == 0 {
                x
            } else {
                signed(x).wrapping_rem(signed(y)) as u64
            }
        }
        0x90 => {
            if y == 0 {
                x
            } else {
                x % y
            }
        }
        0xa0 => x ^ y,
        0xb0 => match off {
            // MOVSX: sign-extend the low `off` bits.
            8 | 16 | 32 => {
                let shift = 64 - off as u32;
                let v = (((b << shift) as i64) >> shift) as u64;
                if wide {
                    v
                } else {
                    v & 0xffff_ffff
                }
            }
            _ => y,
        },
        0xc0 => {
            let s = (y % bits) as u32;
            if wide {
                ((x as i64) >> s) as u64
            } else {
                u64::from(((x as u32 as i32) >> s) as u32)
            }
        }
        0xd0 => {
            // END: to big-endian (`reg` set, or ALU64's bswap) swaps; to little-endian
            // truncates (this host is little-endian).
            let swap = reg || wide;
            match (imm, swap) {
                (16, true) => u64::from((a as u16).swap_bytes()),
                (32, true) => u64::from((a as u32).swap_bytes()),
                (64, true) => a.swap_bytes(),
                (16, false) => a & 0xffff,
                (32, false) => a & 0xffff_ffff,
                _ => a,
            }
        }
        _ => bail!("unknown ALU operation {op:#x}"),
    })
}
