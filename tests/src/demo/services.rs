//! The server room's services; sockets are bound inside its namespace.

use super::*;

/// Serves one accepted connection.
pub(super) type Handler = fn(TcpStream);

pub(super) fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>, handler: Handler) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                thread::spawn(move || handler(s));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

pub(super) fn udp_loop(socket: UdpSocket, stop: Arc<AtomicBool>, reply: fn(&[u8]) -> Vec<u8>) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&reply(&buf[..n]), from);
        }
    }
}

pub(super) fn serve_hl7(mut s: TcpStream) {
    while let Ok(msg) = read_mllp(&mut s) {
        let control = msg
            .split('\r')
            .next()
            .and_then(|msh| msh.split('|').nth(9))
            .unwrap_or("0")
            .to_string();
        let ack = format!(
            "MSH|^~\\&|HL7ENGINE|HOSP|MONITOR|ICU|20261123120000||ACK^R01^ACK|A{control}|P|2.6\rMSA|AA|{control}\r"
        );
        if s.write_all(&mllp(&ack)).is_err() {
            return;
        }
    }
}

pub(super) fn serve_pump(s: TcpStream) {
    let Ok(reader) = s.try_clone() else { return };
    for (n, line) in BufReader::new(reader).lines().enumerate() {
        let Ok(line) = line else { return };
        let word = line.split_whitespace().next().unwrap_or("");
        if (&s)
            .write_all(format!("OK {word} {n}\n").as_bytes())
            .is_err()
        {
            return;
        }
    }
}

pub(super) fn serve_dicom(mut s: TcpStream) {
    let mut head = [0u8; 6];
    while s.read_exact(&mut head).is_ok() {
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let mut body = vec![0u8; len.min(64 * 1024)];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        let reply: &[u8] = match head[0] {
            // A-ASSOCIATE-RQ → a minimal A-ASSOCIATE-AC.
            0x01 => &[0x02, 0, 0, 0, 0, 4, 0, 1, 0, 0],
            // A-RELEASE-RQ → A-RELEASE-RP.
            0x05 => &[0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0],
            _ => return,
        };
        if s.write_all(reply).is_err() {
            return;
        }
    }
}

pub(super) fn serve_ssh_banner(mut s: TcpStream) {
    let _ = s.write_all(b"SSH-2.0-biomed-jump-host\r\n");
}

pub(super) fn ntp_reply(req: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 48];
    r[0] = 0x24; // LI 0, version 4, mode 4 (server)
    r[1] = 2; // stratum
    if req.len() >= 48 {
        // Originate timestamp = the client's transmit timestamp.
        r[24..32].copy_from_slice(&req[40..48]);
    }
    r
}

pub(super) fn dns_reply(req: &[u8]) -> Vec<u8> {
    let mut r = req.to_vec();
    if r.len() >= 4 {
        r[2] |= 0x80; // a response
        r[3] = (r[3] & 0xf0) | 3; // NXDOMAIN: the demo has no zone
    }
    r
}
