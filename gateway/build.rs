//! Builds the XDP program (gateway-ebpf) for bpfel-unknown-none with the nightly toolchain,
//! so that a plain `cargo build` of the controller builds both. The object lands in OUT_DIR
//! and is embedded by `lazaret::dataplane::xdp::program`.

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../gateway-ebpf/src");
    println!("cargo:rerun-if-changed=../gateway-ebpf/abi/src");
    println!("cargo:rerun-if-changed=../gateway-ebpf/Cargo.toml");
    let ebpf = aya_build::Package {
        name: "lazaret-ebpf",
        root_dir: "../gateway-ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Nightly)
}
