//! Harness for end-to-end tests: starts real `pubsubd` processes on free loopback
//! ports in temporary directories, and runs the `pubsub` binary against them.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the test
//! executables (the cli crate's own integration test makes cargo build them first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of a workspace binary built beside the running test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo test --workspace does)",
        path.display()
    );
    path
}

/// A running `pubsubd standalone`, killed (SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    data_dir: PathBuf,
    address: String,
}

impl Server {
    /// Starts a standalone server on a free port over `data_dir`.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_on(data_dir, "127.0.0.1:0")
    }

    /// Starts a standalone server listening on `listen`.
    pub fn start_on(data_dir: &Path, listen: &str) -> Server {
        let mut child = Command::new(binary("pubsubd"))
            .args(["standalone", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", listen])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pubsubd");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(address) = line.strip_prefix("listening on ") {
                    let _ = tx.send(address.to_string());
                }
            }
        });
        let address = match rx.recv_timeout(START_TIMEOUT) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!("pubsubd did not start listening within {START_TIMEOUT:?}");
            }
        };
        Server {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            address,
        }
    }

    /// The `host:port` the server listens on.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Kills the server with SIGKILL and waits for it to die.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM (a clean shutdown) and waits for it.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("pubsubd did not stop within 10 s of SIGTERM");
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and data.
    pub fn restart_after_kill9(&mut self) {
        self.kill9();
        let restarted = Server::start_on(&self.data_dir.clone(), &self.address.clone());
        *self = restarted;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `pubsub --server ADDR ARGS...` with `stdin` fed in; returns its output.
pub fn pubsub(server: &str, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(binary("pubsub"))
        .arg("--server")
        .arg(server)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pubsub");
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().expect("wait for pubsub");
    let _ = writer.join();
    output
}
