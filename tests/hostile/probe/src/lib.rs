//! Probes the cage: environment, arguments, files, sockets, name lookup and
//! clocks. Input: a loopback port to try to connect to. Returns one line
//! per probe.

use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use claw_sdk::Claw;

struct Probe;

fn outcome<T>(result: std::io::Result<T>) -> String {
    match result {
        Ok(_) => "ALLOWED".into(),
        Err(e) => format!("denied ({e})"),
    }
}

impl Claw for Probe {
    fn run(input: String, _conversation_id: String) -> Result<String, String> {
        let mut lines = Vec::new();
        let vars: Vec<String> = std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        lines.push(format!("env: {} variables {vars:?}", vars.len()));
        lines.push(format!("args: {}", std::env::args_os().count()));
        for path in ["/etc/passwd", "/proc/self/environ", "clawrun.db", "/"] {
            lines.push(format!("read {path}: {}", outcome(std::fs::read(path))));
        }
        lines.push(format!("list /: {}", outcome(std::fs::read_dir("/"))));
        lines.push(format!(
            "create /tmp/x: {}",
            outcome(std::fs::write("/tmp/x", b"x"))
        ));
        lines.push(format!(
            "cwd: {:?}",
            std::env::current_dir().map_err(|e| e.kind())
        ));
        let port = input.trim();
        lines.push(format!(
            "tcp connect 127.0.0.1:{port}: {}",
            outcome(TcpStream::connect(format!("127.0.0.1:{port}")))
        ));
        lines.push(format!(
            "udp bind: {}",
            outcome(UdpSocket::bind("127.0.0.1:0"))
        ));
        lines.push(format!(
            "lookup localhost: {}",
            outcome(("localhost", 80).to_socket_addrs())
        ));
        lines.push(clocks());
        Ok(lines.join("\n"))
    }
}

/// Reads both clocks for a while and reports the finest step seen, and
/// whether every reading was a whole number of milliseconds.
fn clocks() -> String {
    let start = Instant::now();
    let mut finest = Duration::MAX;
    let mut whole_ms = true;
    let mut last = Duration::ZERO;
    let mut readings = 0u64;
    while last < Duration::from_millis(30) {
        let now = start.elapsed();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        whole_ms &= now.subsec_nanos().is_multiple_of(1_000_000)
            && wall.subsec_nanos().is_multiple_of(1_000_000);
        if now > last {
            finest = finest.min(now - last);
            last = now;
        }
        readings += 1;
    }
    format!(
        "clocks: finest step {finest:?}, whole milliseconds: {whole_ms}, {} readings",
        if readings > 1000 { "many" } else { "few" }
    )
}

claw_sdk::export!(Probe);
