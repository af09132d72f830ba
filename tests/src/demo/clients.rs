//! Clients of the clinical services; sockets are created inside the device's namespace.

use super::*;

pub(super) fn connect(ns: &Netns, addr: &str) -> Result<TcpStream> {
    let addr: SocketAddr = addr.parse()?;
    let s = ns.run(move || TcpStream::connect_timeout(&addr, PATIENCE))??;
    s.set_read_timeout(Some(PATIENCE))?;
    s.set_write_timeout(Some(PATIENCE))?;
    Ok(s)
}

pub(super) fn tcp_answers(ns: &Netns, addr: &str) -> Result<()> {
    connect(ns, addr).map(drop)
}

/// MLLP framing: 0x0b, the message, 0x1c 0x0d.
pub(super) fn mllp(msg: &str) -> Vec<u8> {
    let mut v = vec![0x0b];
    v.extend_from_slice(msg.as_bytes());
    v.extend_from_slice(&[0x1c, 0x0d]);
    v
}

pub(super) fn read_mllp(s: &mut TcpStream) -> Result<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while buf.len() < 64 * 1024 {
        s.read_exact(&mut byte)?;
        if byte[0] == 0x1c {
            s.read_exact(&mut byte)?;
            return Ok(String::from_utf8_lossy(&buf)
                .trim_start_matches('\x0b')
                .to_string());
        }
        buf.push(byte[0]);
    }
    bail!("MLLP frame too long")
}

pub(super) fn hl7(ns: &Netns, profile: &str) -> Result<()> {
    let mut s = connect(ns, HL7_ENGINE)?;
    let msg = format!(
        "MSH|^~\\&|MONITOR|ICU|HL7ENGINE|HOSP|20261123120000||ORU^R01^ORU_R01|{profile}-1|P|2.6\r\
         PID|||MRN4471\r\
         OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97|262688^MDC_DIM_PERCENT^MDC|||||R\r"
    );
    s.write_all(&mllp(&msg))?;
    let ack = read_mllp(&mut s)?;
    if !ack.contains("MSA|AA") {
        bail!("no positive ACK: {ack:?}");
    }
    Ok(())
}

pub(super) fn time_sync(from: &Netns, to: &Netns) -> Result<()> {
    let rx = to.run(|| UdpSocket::bind("10.20.0.11:2000"))??;
    rx.set_read_timeout(Some(PATIENCE))?;
    let tx = from.run(|| UdpSocket::bind("10.20.0.10:0"))??;
    tx.send_to(b"TIME 20261123T120000Z", "10.20.0.11:2000")?;
    let mut buf = [0u8; 64];
    rx.recv_from(&mut buf)?;
    Ok(())
}

/// An A-ASSOCIATE-RQ for the Verification SOP class, answered by an A-ASSOCIATE-AC.
pub(super) fn dicom(ns: &Netns) -> Result<()> {
    let mut s = connect(ns, PACS)?;
    let mut pdu = vec![0x01, 0x00, 0, 0, 0, 68, 0x00, 0x01, 0, 0];
    pdu.extend_from_slice(b"PACS            ");
    pdu.extend_from_slice(b"CT01            ");
    pdu.extend_from_slice(&[0u8; 32]);
    s.write_all(&pdu)?;
    let mut head = [0u8; 6];
    s.read_exact(&mut head)?;
    if head[0] != 0x02 {
        bail!("association not accepted (PDU type {:#04x})", head[0]);
    }
    s.write_all(&[0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0])?;
    s.read_exact(&mut head)?;
    Ok(())
}

pub(super) fn pump_exchange(ns: &Netns) -> Result<()> {
    let s = connect(ns, PUMP_SERVER)?;
    let mut r = BufReader::new(s.try_clone()?);
    (&s).write_all(b"LIBRARY-CHECK v2026.11\n")?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("OK") {
        bail!("unexpected answer {line:?}");
    }
    Ok(())
}

pub(super) fn ntp(ns: &Netns) -> Result<()> {
    let s = ns.run(|| UdpSocket::bind("0.0.0.0:0"))??;
    s.set_read_timeout(Some(PATIENCE))?;
    let mut req = [0u8; 48];
    req[0] = 0x23; // LI 0, version 4, mode 3 (client)
    s.send_to(&req, NTP)?;
    let mut buf = [0u8; 64];
    let (n, _) = s.recv_from(&mut buf)?;
    if n < 48 || buf[0] & 7 != 4 {
        bail!("not an NTP server reply");
    }
    Ok(())
}

pub(super) fn ssh_banner(ns: &Netns) -> Result<()> {
    let s = connect(ns, JUMP_HOST)?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if !line.starts_with("SSH-2.0-") {
        bail!("no SSH banner");
    }
    Ok(())
}

/// pump-depot-01's long-lived session: a status message every 200 ms, each answered. It
/// records how many were answered and whether an answer stopped coming.
pub(super) struct PumpSession {
    answered: Arc<std::sync::atomic::AtomicUsize>,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl PumpSession {
    pub(super) fn open(ns: &Netns) -> Result<Self> {
        let s = connect(ns, PUMP_SERVER)?;
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, c, st) = (answered.clone(), cut.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let Ok(reader) = s.try_clone() else {
                c.store(true, Ordering::SeqCst);
                return;
            };
            let mut r = BufReader::new(reader);
            // Bounded: at most 10 minutes of messages.
            for seq in 0..3000u32 {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let mut line = String::new();
                let ok = (&s)
                    .write_all(format!("STATUS {seq} infusing=0 battery=96\n").as_bytes())
                    .is_ok()
                    && r.read_line(&mut line).is_ok_and(|n| n > 0);
                if !ok {
                    c.store(true, Ordering::SeqCst);
                    return;
                }
                a.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(200));
            }
        });
        Ok(PumpSession {
            answered,
            cut,
            stop,
            thread: Some(thread),
        })
    }

    pub(super) fn exchanged(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// How many messages were answered before the session was cut, if it was.
    pub(super) fn cut_after(&self) -> Option<usize> {
        self.cut.load(Ordering::SeqCst).then(|| self.exchanged())
    }
}

impl Drop for PumpSession {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
