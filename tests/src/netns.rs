//! A private network for partition tests: every node in its own Linux network
//! namespace with its own 10.77.S.x address, all on one bridge in a hub namespace,
//! which the test process (in the root namespace, at 10.77.S.1) reaches through one
//! more veth pair. The bridge lives in the hub because Docker drops bridged traffic in
//! the root namespace (FORWARD policy DROP, bridge-nf-call-iptables).
//!
//! Faults are nftables rules inside a node's namespace: [`Network::cut`] drops that
//! node's traffic to and from chosen peers (the test process still reaches it),
//! [`Network::heal`] deletes them. Namespaces are named `ps<pid>x<n>...`, so runs do
//! not collide; dropping the [`Network`] removes them, and namespaces left by a test
//! process that died are removed by the next one.
//!
//! Needs root; without it a test says it did not run, unless `PUBSUB_TESTS_REQUIRE_ROOT`
//! is set (as in CI), where that is a failure.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Port every cluster manager listens on (each node has its own address).
pub const MANAGER_PORT: u16 = 9093;

/// Port every broker listens on.
pub const BROKER_PORT: u16 = 9092;

/// Namespaces of one test run and the bridge between them.
pub struct Network {
    /// `ps<pid>x<n>`: the start of every namespace name, and the root-side interface.
    prefix: String,
    /// The S of 10.77.S.0/24.
    subnet: u8,
    /// How many node namespaces.
    nodes: usize,
}

impl Network {
    /// Creates `nodes` node namespaces on a fresh bridge, or `None` (after saying the
    /// test did not run) where namespaces cannot be made and root is not required.
    pub fn create(nodes: usize) -> Option<Network> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let counter = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("ps{}x{counter}", std::process::id());
        let mut network = Network {
            subnet: free_subnet(),
            prefix,
            nodes: 0,
        };
        let hub = network.hub();
        if !probe(&hub) {
            return None;
        }
        ip_in(&hub, "link add br0 type bridge");
        ip_in(&hub, "link set br0 up");
        let root_side = network.prefix.clone();
        ip(&format!(
            "link add {root_side} type veth peer name uplink netns {hub}"
        ));
        ip(&format!(
            "addr add 10.77.{}.1/24 dev {root_side}",
            network.subnet
        ));
        ip(&format!("link set {root_side} up"));
        ip_in(&hub, "link set dev uplink master br0 up");
        for node in 0..nodes {
            network.add_node(node);
        }
        Some(network)
    }

    fn add_node(&mut self, node: usize) {
        let namespace = self.namespace(node);
        let hub = self.hub();
        ip(&format!("netns add {namespace}"));
        self.nodes = node + 1;
        ip_in(&namespace, "link set lo up");
        ip(&format!(
            "link add eth0 netns {namespace} type veth peer name n{node} netns {hub}"
        ));
        ip_in(
            &namespace,
            &format!("addr add {}/24 dev eth0", self.ip(node)),
        );
        ip_in(&namespace, "link set eth0 up");
        ip_in(&hub, &format!("link set dev n{node} master br0 up"));
    }

    fn hub(&self) -> String {
        format!("{}h", self.prefix)
    }

    /// The namespace of node `node` (from 0).
    pub fn namespace(&self, node: usize) -> String {
        format!("{}n{node}", self.prefix)
    }

    /// Node `node`'s IP address.
    pub fn ip(&self, node: usize) -> String {
        format!("10.77.{}.{}", self.subnet, 11 + node)
    }

    /// The command prefix that runs a program inside node `node`'s namespace.
    pub fn exec_prefix(&self, node: usize) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespace(node)]
            .map(String::from)
            .to_vec()
    }

    /// Drops every packet between `node` and each of `peers`, both ways; the test
    /// process (and any node not listed) still reaches it. Replaces an earlier cut.
    pub fn cut(&self, node: usize, peers: &[usize]) {
        self.drop_packets(node, peers, Direction::Both, 100);
    }

    /// Drops `percent` of the packets between `node` and each of `peers` going
    /// `direction` (as seen from `node`), each drawn at random by nftables' `numgen`.
    /// Replaces an earlier cut of `node`.
    pub fn drop_packets(&self, node: usize, peers: &[usize], direction: Direction, percent: u32) {
        self.heal(node);
        let addresses: Vec<String> = peers.iter().map(|&p| self.ip(p)).collect();
        let set = addresses.join(", ");
        let share = match percent {
            100.. => String::new(),
            p => format!("numgen random mod 100 < {p} "),
        };
        let chain = |name: &str, field: &str, on: bool| match on {
            true => format!(
                "chain {name} {{ type filter hook {name} priority 0; policy accept; ip {field} {{ {set} }} {share}drop; }}\n"
            ),
            false => String::new(),
        };
        let inbound = matches!(direction, Direction::Both | Direction::Inbound);
        let outbound = matches!(direction, Direction::Both | Direction::Outbound);
        let rules = format!(
            "table inet chaos {{\n{}{}}}\n",
            chain("input", "saddr", inbound),
            chain("output", "daddr", outbound)
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.namespace(node), "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run nft");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "nft -f in {}: {rules}",
            self.namespace(node)
        );
    }

    /// Cuts every node of `side` off from every node not in it.
    pub fn split(&self, side: &[usize]) {
        let others: Vec<usize> = (0..self.nodes).filter(|n| !side.contains(n)).collect();
        for &node in side {
            self.cut(node, &others);
        }
    }

    /// Removes the cut of `node`, if any.
    pub fn heal(&self, node: usize) {
        // Fails (quietly) where there is no cut.
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.namespace(node)])
            .args(["nft", "delete", "table", "inet", "chaos"])
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// Removes every cut.
    pub fn heal_all(&self) {
        (0..self.nodes).for_each(|node| self.heal(node));
    }
}

/// Which packets of a node a fault drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Those it receives and those it sends.
    Both,
    /// Only those it receives.
    Inbound,
    /// Only those it sends.
    Outbound,
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and so the pair.
        for node in 0..self.nodes {
            let _ = quiet(Command::new("ip").args(["netns", "del", &self.namespace(node)]));
        }
        let _ = quiet(Command::new("ip").args(["netns", "del", &self.hub()]));
        let _ = quiet(Command::new("ip").args(["link", "del", &self.prefix]));
    }
}

/// Creates the hub namespace: `true` if it worked, `false` (after saying so) when it
/// failed and root is not required.
fn probe(hub: &str) -> bool {
    let output = Command::new("ip")
        .args(["netns", "add", hub])
        .output()
        .map_err(|e| e.to_string());
    let why = match output {
        Ok(output) if output.status.success() => {
            ip_in(hub, "link set lo up");
            return true;
        }
        Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
        Err(e) => e,
    };
    assert!(
        std::env::var_os("PUBSUB_TESTS_REQUIRE_ROOT").is_none(),
        "cannot create a network namespace (ip netns add {hub}): {why}"
    );
    eprintln!("network-partition test NOT RUN: ip netns add failed (needs root): {why}");
    false
}

/// A /24 under 10.77 that no interface here uses yet.
fn free_subnet() -> u8 {
    let output = Command::new("ip").args(["-4", "-o", "addr"]).output();
    let taken = output
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let start = std::process::id() as usize;
    (0..254)
        .map(|i| ((start + i) % 254 + 1) as u8)
        .find(|s| !taken.contains(&format!(" 10.77.{s}.")))
        .expect("a free 10.77.S.0/24")
}

/// Deletes namespaces `ps<pid>x...` whose process no longer runs.
fn remove_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let pid = name
            .strip_prefix("ps")
            .and_then(|rest| rest.split('x').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = quiet(Command::new("ip").args(["netns", "del", name]));
        }
    }
}

fn quiet(command: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
}

/// Runs `ip ARGS` (split on spaces); panics if it fails.
fn ip(args: &str) {
    let output = Command::new("ip")
        .args(args.split(' '))
        .output()
        .expect("run ip");
    assert!(
        output.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Runs `ip ARGS` inside `namespace`.
fn ip_in(namespace: &str, args: &str) {
    ip(&format!("-n {namespace} {args}"));
}
