//! The guest's console (ttyS0): the kernel's and the init's messages,
//! evidence when a guest fails or ends.
//!
//! QEMU serves it on a chardev socket that a thread here drains as it
//! comes, keeping only the tail: a guest can print without end, and a file
//! chardev would grow with it. The kernel's first messages come after the
//! firmware, tens of milliseconds after QEMU starts; the socket is connected
//! first of all, well before that.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// Bytes kept: the most recent ones.
pub const KEEP: usize = 64 * 1024;

/// The console's recent output, filled by a reader thread that ends with
/// QEMU (when its socket closes).
#[derive(Debug, Clone, Default)]
pub struct Console {
    tail: Arc<Mutex<VecDeque<u8>>>,
}

impl Console {
    /// Drain `stream` in a thread of its own.
    pub fn drain(stream: UnixStream) -> Console {
        let console = Console::default();
        let tail = console.tail.clone();
        let _ = std::thread::Builder::new().name("guest-console".into()).spawn(move || pump(stream, &tail, KEEP));
        console
    }

    /// The last `n` bytes (at most [`KEEP`]), escaped as text.
    pub fn tail(&self, n: usize) -> String {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let skip = tail.len().saturating_sub(n);
        let bytes: Vec<u8> = tail.iter().skip(skip).copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn pump(mut stream: impl Read, tail: &Mutex<VecDeque<u8>>, keep: usize) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                t.extend(&buf[..n]);
                let over = t.len().saturating_sub(keep);
                t.drain(..over);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_within_its_cap() {
        let tail = Mutex::new(VecDeque::new());
        let text: Vec<u8> = (0..10_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        pump(&text[..], &tail, 1000);
        let kept: Vec<u8> = tail.lock().unwrap().iter().copied().collect();
        assert_eq!(kept.len(), 1000);
        assert!(kept.ends_with(b"line 9999\n"));
    }

    #[test]
    fn a_drained_socket_reads_back() {
        let (mut guest, host) = UnixStream::pair().unwrap();
        let c = Console::drain(host);
        std::io::Write::write_all(&mut guest, b"Linux version 6.1\nqga-guest-init: boom\n").unwrap();
        drop(guest);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !c.tail(KEEP).contains("boom") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(c.tail(5), "boom\n");
    }
}
