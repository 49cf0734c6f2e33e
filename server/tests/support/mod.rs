//! What the server's integration tests share: the real binary, and test bytes.
// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use chunkwise_core::protocol;
use sha2::{Digest, Sha256};

/// A running server process, killed when dropped (so a failing test leaves none behind to
/// hold its output open).
pub struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `chunkwise-server` on a free port over `data_dir`, with `extra` arguments;
/// returns the process and its base URL.
pub fn spawn(data_dir: &std::path::Path, extra: &[&str]) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chunkwise-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();
    let running = Running(child);
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    (running, base)
}

/// `len` pseudo-random bytes, the same for the same `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha_hex(bytes: &[u8]) -> String {
    protocol::hex(&Sha256::digest(bytes))
}
