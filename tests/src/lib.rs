//! Harness for end-to-end tests: starts real `pubsubd` processes on free loopback
//! ports in temporary directories, and runs the `pubsub` binary against them.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the test
//! executables (the cli crate's own integration test makes cargo build them first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod checker;
pub mod disk;
pub mod netns;
pub mod powercut;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a `pubsub` command may run in a test.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

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

/// Builds the LD_PRELOAD shim `tests/e2e/NAME.c` into `dir` with the C compiler cargo
/// links with; returns the shared object's path.
pub fn build_shim(name: &str, dir: &Path) -> PathBuf {
    let shim = dir.join(format!("{name}.so"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/e2e/{name}.c"));
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&source)
        .args(["-ldl", "-lpthread"])
        .status()
        .expect("cc (the C compiler cargo links with) runs");
    assert!(built.success(), "cannot build {}", source.display());
    shim
}

/// A running `pubsubd` process, killed (SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    data_dir: PathBuf,
    address: String,
    /// Arguments after `pubsubd`, with `{listen}` standing for the listen address.
    args: Vec<String>,
    /// Extra environment of the process (kept across restarts).
    env: Vec<(String, String)>,
    /// A command `pubsubd` runs under (`ip netns exec NS`), or empty.
    wrapper: Vec<String>,
}

impl Server {
    /// Starts a standalone server on a free port over `data_dir`.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_on(data_dir, "127.0.0.1:0")
    }

    /// Starts a standalone server listening on `listen`.
    pub fn start_on(data_dir: &Path, listen: &str) -> Server {
        Server::start_with(data_dir, listen, &[])
    }

    /// Starts a standalone server listening on `listen` with extra flags.
    pub fn start_with(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        Server::start_with_env(data_dir, listen, extra, Vec::new())
    }

    /// Starts a standalone server with extra flags and environment.
    pub fn start_with_env(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: Vec<(String, String)>,
    ) -> Server {
        let mut args: Vec<String> = [
            "standalone",
            "--data-dir",
            &data_dir.display().to_string(),
            "--listen",
            "{listen}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn_with_env(data_dir, args, listen, env)
    }

    /// Starts `pubsubd ARGS...`, where `{listen}` in ARGS is replaced by `listen`, and
    /// waits for its `listening on ADDR` line.
    pub fn spawn(data_dir: &Path, args: Vec<String>, listen: &str) -> Server {
        Server::spawn_with_env(data_dir, args, listen, Vec::new())
    }

    /// [`Server::spawn`] with extra environment variables (LD_PRELOAD, for example).
    pub fn spawn_with_env(
        data_dir: &Path,
        args: Vec<String>,
        listen: &str,
        env: Vec<(String, String)>,
    ) -> Server {
        Server::launch(Vec::new(), data_dir, args, listen, env)
    }

    /// [`Server::spawn`] under `wrapper`: `ip netns exec NS`, say, which execs
    /// `pubsubd` (so [`Server::pid`] is still pubsubd's).
    pub fn spawn_wrapped(
        wrapper: Vec<String>,
        data_dir: &Path,
        args: Vec<String>,
        listen: &str,
    ) -> Server {
        Server::launch(wrapper, data_dir, args, listen, Vec::new())
    }

    fn launch(
        wrapper: Vec<String>,
        data_dir: &Path,
        args: Vec<String>,
        listen: &str,
        env: Vec<(String, String)>,
    ) -> Server {
        let expanded: Vec<String> = args.iter().map(|a| a.replace("{listen}", listen)).collect();
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(binary("pubsubd"));
                command
            }
            None => Command::new(binary("pubsubd")),
        };
        // Tests that scrape metrics give their own address; the rest serve none, so
        // parallel servers do not contend for the default port.
        command.env("PUBSUB_METRICS_LISTEN", "off");
        // Likewise Kafka's port: tests of the Kafka listener give their own.
        command.env("PUBSUB_KAFKA_LISTEN", "off");
        if !listen.starts_with("127.") {
            // The network-namespace clusters serve private addresses on purpose.
            command.env("PUBSUB_ALLOW_UNAUTHENTICATED", "true");
        }
        let mut child = command
            .args(&expanded)
            .envs(env.iter().map(|(k, v)| (k, v)))
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
                panic!("pubsubd {expanded:?} did not start listening within {START_TIMEOUT:?}");
            }
        };
        Server {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            address,
            args,
            env,
            wrapper,
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

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How the process ended, if it has (a crash such as SIGBUS shows here).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops the process with SIGSTOP: it keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a paused process with SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the server runs").to_string();
        let status = Command::new("kill").args([signal, &pid]).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill {signal} {pid} failed"
        );
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

    /// Starts the server again with the same arguments, on the same address.
    pub fn restart(&mut self) {
        self.kill9();
        let restarted = Server::launch(
            self.wrapper.clone(),
            &self.data_dir.clone(),
            self.args.clone(),
            &self.address.clone(),
            self.env.clone(),
        );
        *self = restarted;
    }

    /// Replaces the extra environment used by the next restart.
    pub fn set_env(&mut self, env: Vec<(String, String)>) {
        self.env = env;
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and data.
    pub fn restart_after_kill9(&mut self) {
        self.restart();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Below the kernel's range for outgoing connections (32768-60999), so a server
    // restarted on the same port never finds it taken by some client's connection.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 12_000 + (std::process::id() % 400) as u16 * 50;
    for _ in 0..20_000 {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % 20_000;
        let port = 12_000 + (base - 12_000 + step) % 20_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below 32000");
}

/// Three cluster managers and three brokers, each a `pubsubd` process.
pub struct Cluster {
    /// Temporary directory holding every node's data.
    pub dir: tempfile::TempDir,
    /// Cluster-manager processes, ids 1, 2, 3 at index 0, 1, 2.
    pub managers: Vec<Server>,
    /// Broker processes, ids 1, 2, 3 at index 0, 1, 2.
    pub brokers: Vec<Server>,
    /// The namespaces the processes run in, if not on loopback (dropped after them).
    pub network: Option<netns::Network>,
    /// Each broker's Kafka-protocol listener (on loopback clusters only).
    pub kafka: Vec<String>,
    /// The cluster managers as brokers are given them (`--cluster-managers`).
    manager_list: String,
    /// The lease and replica lag the brokers run with, if not the default.
    lease: Option<String>,
}

impl Cluster {
    /// Starts 3 cluster managers (broker lease `lease`) and 3 brokers whose followers
    /// leave the in-sync replicas after lagging that long too.
    pub fn start(lease: &str) -> Cluster {
        Cluster::start_with(Some(lease))
    }

    /// Starts 3 cluster managers and 3 brokers with pubsubd's default lease and
    /// replica lag: what a deployment gets without tuning.
    pub fn start_default() -> Cluster {
        Cluster::start_with(None)
    }

    /// Starts 3 cluster managers and 3 brokers as [`Cluster::start`] does, each in its
    /// own namespace of `network` (managers on nodes 0-2, brokers on nodes 3-5) at the
    /// node's address and the fixed ports [`netns::MANAGER_PORT`] and
    /// [`netns::BROKER_PORT`].
    pub fn start_in(network: netns::Network, lease: &str) -> Cluster {
        Cluster::start_on(Some(lease), Some(network))
    }

    fn start_with(lease: Option<&str>) -> Cluster {
        Cluster::start_on(lease, None)
    }

    fn start_on(lease: Option<&str>, network: Option<netns::Network>) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        // (command prefix, listen address) of node `node`.
        let place = |node: usize, port: u16| match &network {
            Some(net) => (net.exec_prefix(node), format!("{}:{port}", net.ip(node))),
            None => (Vec::new(), format!("127.0.0.1:{}", free_port())),
        };
        let at: Vec<_> = (0..3).map(|i| place(i, netns::MANAGER_PORT)).collect();
        let peers: Vec<String> = at
            .iter()
            .enumerate()
            .map(|(i, (_, address))| format!("{}={address}", i + 1))
            .collect();
        let peers = peers.join(",");
        let managers: Vec<Server> = at
            .into_iter()
            .enumerate()
            .map(|(i, (wrapper, listen))| {
                let data = dir.path().join(format!("cm{}", i + 1));
                let mut args = vec![
                    "cluster-manager".to_string(),
                    "--id".into(),
                    (i + 1).to_string(),
                    "--listen".into(),
                    "{listen}".into(),
                    "--data-dir".into(),
                    data.display().to_string(),
                    "--peers".into(),
                    peers.clone(),
                ];
                if let Some(lease) = lease {
                    args.extend(["--lease".to_string(), lease.to_string()]);
                }
                Server::spawn_wrapped(wrapper, &data, args, &listen)
            })
            .collect();
        let manager_list: Vec<String> = managers.iter().map(|m| m.address().to_string()).collect();
        let manager_list = manager_list.join(",");
        let kafka: Vec<String> = match network {
            Some(_) => Vec::new(),
            None => (0..3)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
        };
        let brokers = (0..3)
            .map(|i| {
                let data = dir.path().join(format!("broker{}", i + 1));
                let mut args = broker_args(i as u32 + 1, &data, &manager_list, lease);
                if let Some(address) = kafka.get(i) {
                    args.extend(["--kafka-listen".to_string(), address.clone()]);
                }
                let (wrapper, listen) = place(3 + i, netns::BROKER_PORT);
                Server::spawn_wrapped(wrapper, &data, args, &listen)
            })
            .collect();
        Cluster {
            dir,
            managers,
            brokers,
            network,
            kafka,
            manager_list,
            lease: lease.map(String::from),
        }
    }

    /// Starts one more broker on loopback, id `brokers.len() + 1`, joining the same
    /// cluster managers with the same lease and replica lag.
    pub fn add_broker(&mut self) -> &Server {
        let id = self.brokers.len() as u32 + 1;
        let data = self.dir.path().join(format!("broker{id}"));
        let args = broker_args(id, &data, &self.manager_list, self.lease.as_deref());
        let listen = format!("127.0.0.1:{}", free_port());
        self.brokers
            .push(Server::spawn_wrapped(Vec::new(), &data, args, &listen));
        &self.brokers[id as usize - 1]
    }

    /// Addresses of the cluster managers still running.
    pub fn live_managers(&self) -> Vec<String> {
        self.managers
            .iter()
            .filter(|m| m.pid().is_some())
            .map(|m| m.address().to_string())
            .collect()
    }
}

/// `pubsubd broker` arguments for broker `id` of a test cluster.
fn broker_args(id: u32, data: &Path, managers: &str, lease: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "broker".to_string(),
        "--id".into(),
        id.to_string(),
        "--listen".into(),
        "{listen}".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--cluster-managers".into(),
        managers.to_string(),
    ];
    if let Some(lease) = lease {
        args.extend(["--replica-lag-max".to_string(), lease.to_string()]);
    }
    args
}

/// The admin token a server with `--auth` wrote to `data/admin.token`, once it works:
/// the file is written before its token is committed, so `works` (a call made with it)
/// is tried until it succeeds, for up to 20 s.
pub fn admin_token(data: &Path, works: impl Fn(&str) -> Result<(), String>) -> String {
    let path = data.join("admin.token");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let tried = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let token = text.trim().to_string();
                works(&token).map(|()| token)
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        };
        match tried {
            Ok(token) => return token,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the admin token never worked: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `works` for [`admin_token`]: `pubsub --server SERVER [EXTRA...] --token TOKEN token list`.
pub fn lists_tokens<'a>(
    server: &'a str,
    extra: &'a [&'a str],
) -> impl Fn(&str) -> Result<(), String> + 'a {
    move |token| {
        let mut args = extra.to_vec();
        args.extend(["--token", token, "token", "list"]);
        let out = pubsub(server, &args, b"");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// Runs `pubsub --server ADDR ARGS...` with `stdin` fed in; returns its output.
pub fn pubsub(server: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new(binary("pubsub"));
    command.arg("--server").arg(server).args(args);
    run_pubsub(command, args, stdin)
}

/// Runs `pubsub ARGS...` with extra environment (`PUBSUB_SERVER`, say) and `stdin`
/// fed in; returns its output.
pub fn pubsub_with_env(env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new(binary("pubsub"));
    command.args(args).envs(env.iter().copied());
    run_pubsub(command, args, stdin)
}

fn run_pubsub(mut command: Command, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = command
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
    // A command that hangs fails its test instead of the whole run.
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(COMMAND_TIMEOUT).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            return true;
        }
        false
    });
    let output = child.wait_with_output().expect("wait for pubsub");
    let _ = done.send(());
    let _ = writer.join();
    let killed = watchdog.join().unwrap_or(false);
    assert!(
        !killed,
        "pubsub {args:?} did not finish within {COMMAND_TIMEOUT:?}; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
