//! The ARP/NDP responder on a real network: two network namespaces joined by a veth pair, the
//! responder running in namespace A (this test binary re-executed under `ip netns exec`), and
//! real tools (`arping`, `ndisc6`, `ping`, the kernel's neighbour table) asking from namespace B.
//!
//! Needs root, `ip`, `arping` (Thomas Habets' 2.x) and `ndisc6`
//! (`tests/testbed/install-deps.sh` installs them). Addresses: 198.51.100.0/24 and
//! 2001:db8:fe::/64, only inside the namespaces these tests create; every namespace is deleted by
//! a Drop guard, also when a test fails.
//!
//! So every test is `#[ignore]`d (`cargo test --workspace` passes as any user) and `make
//! netns-test` runs them as root with `-- --ignored` (only `responder_process`, the child's body,
//! is not ignored: it does nothing unless re-executed as the child).

// Test code: the harness helpers outside `#[test]` functions may panic like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferrolb_speaker::l2::{Config, L2Metrics, Responder};

mod common;
use common::{must, run};

/// Set in the re-executed child: it then runs the responder and obeys commands on stdin.
const CHILD_ENV: &str = "FERROLB_L2_NETNS_CHILD";
/// Extra exclusion pattern for the child's responder.
const EXCLUDE_ENV: &str = "FERROLB_L2_NETNS_EXCLUDE";
/// Prefix of the child's answers on stdout (libtest prints its own lines there too).
const ANSWER: &str = "FL2 ";

const LED4: &str = "198.51.100.250";
const NOT_LED4: &str = "198.51.100.251";
const LED6: &str = "2001:db8:fe::250";
const NOT_LED6: &str = "2001:db8:fe::251";
/// The solicited-node group of `LED6`, which A joins only while it leads it.
const SOLICITED_NODE6: &str = "ff02::1:ff00:250";
const WRONG_MAC: &str = "02:00:00:00:00:99";

/// The MAC a resolver tool printed, `None` if it exited with `no_answer`. Any other failure means
/// the question was never asked and fails the test (a silent "no answer" would pass wrongly).
fn answered(out: &Output, no_answer: i32) -> Option<String> {
    let text = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
    match out.status.code() {
        Some(0) if !text.is_empty() => Some(text),
        Some(code) if code == no_answer => None,
        _ => panic!(
            "resolver failed ({}): {text} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// These tests need root and the tools; without them they fail loudly rather than pass.
fn require_root_and_tools() {
    common::require_root_and_tools(
        "l2_netns",
        "network namespaces, raw sockets",
        &["ip", "arping", "ndisc6", "ping"],
    );
}

/// Two namespaces, `a` and `b`, each with an `eth0` of one veth pair; deleted on drop.
struct Netns {
    a: String,
    b: String,
}

impl Netns {
    fn new() -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let base = format!("fl2-{}-{n}", std::process::id());
        let net = Netns {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        let (a, b) = (&net.a, &net.b);
        must(&format!("ip netns add {a}"));
        must(&format!("ip netns add {b}"));
        must(&format!(
            "ip -n {a} link add eth0 type veth peer name eth0 netns {b}"
        ));
        for (ns, v4, v6) in [
            (a, "198.51.100.201/24", "2001:db8:fe::1/64"),
            (b, "198.51.100.202/24", "2001:db8:fe::2/64"),
        ] {
            // No DAD: link-local addresses are usable at once.
            must(&format!(
                "ip netns exec {ns} sysctl -qw net.ipv6.conf.eth0.accept_dad=0"
            ));
            must(&format!("ip -n {ns} addr add {v4} dev eth0"));
            must(&format!("ip -n {ns} addr add {v6} dev eth0 nodad"));
            must(&format!("ip -n {ns} link set lo up"));
            must(&format!("ip -n {ns} link set eth0 up"));
        }
        net.wait_for_link_locals();
        net
    }

    /// Both ends need their link-local address: A's responder speaks NDP only where IPv6 is up,
    /// and B cannot send an NS before it has a source address.
    fn wait_for_link_locals(&self) {
        for ns in [&self.a, &self.b] {
            let deadline = Instant::now() + Duration::from_secs(5);
            let show = format!("ip -n {ns} -6 addr show dev eth0 scope link -tentative");
            while !must(&show).contains("fe80::") {
                assert!(
                    Instant::now() < deadline,
                    "no link-local address on {ns} eth0"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn mac(&self, ns: &str, dev: &str) -> String {
        let out = must(&format!("ip -n {ns} -br link show dev {dev}"));
        out.split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no MAC in {out:?}"))
            .to_lowercase()
    }

    /// Asks B's `arping` for `ip`: the MAC that answered, if any (arping exits 1 without one).
    fn arping(&self, ip: &str) -> Option<String> {
        let ask = format!("ip netns exec {} arping -c 1 -w 1 -r -i eth0 {ip}", self.b);
        answered(&run(&ask), 1)
    }

    /// Asks B's `ndisc6` for `ip`: the MAC that answered, if any (ndisc6 exits 2 without one).
    fn ndisc6(&self, ip: &str) -> Option<String> {
        let ask = format!(
            "ip netns exec {} ndisc6 -1 -q -r 2 -w 400 {ip} eth0",
            self.b
        );
        answered(&run(&ask), 2)
    }

    /// Makes B's kernel resolve `ip` itself and returns B's neighbour entry for it. No echo reply
    /// comes back (nothing in A owns the address), which is fine.
    fn kernel_resolves(&self, ip: &str) -> String {
        let _ = run(&format!("ip netns exec {} ping -c1 -W1 {ip}", self.b));
        self.neighbour(ip)
    }

    /// B's neighbour entry for `ip`.
    fn neighbour(&self, ip: &str) -> String {
        must(&format!("ip -n {} neigh show {ip} dev eth0", self.b)).to_lowercase()
    }

    /// Pre-seeds B with a stale entry for `ip` pointing at a MAC nobody has.
    fn seed_wrong_neighbour(&self, ip: &str) {
        let b = &self.b;
        must(&format!(
            "ip -n {b} neigh replace {ip} dev eth0 lladdr {WRONG_MAC} nud stale"
        ));
    }

    /// Waits up to a second for A's multicast memberships on eth0 to include `group` (or, with
    /// `joined` false, to no longer include it).
    fn multicast_membership_becomes(&self, group: &str, joined: bool) -> bool {
        let show = format!("ip -n {} -6 maddr show dev eth0", self.a);
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if must(&show).contains(group) == joined {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `within` for B's neighbour entry of `ip` to contain `mac`.
    fn neighbour_becomes(&self, ip: &str, mac: &str, within: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let entry = self.neighbour(ip);
            if entry.contains(mac) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                return Err(entry);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The responder process in namespace A; killed on drop.
struct ResponderProcess {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl ResponderProcess {
    fn start(net: &Netns, exclude: Option<&str>) -> ResponderProcess {
        let exe = std::env::current_exe().unwrap();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &net.a])
            .arg(exe)
            .args([
                "--exact",
                "responder_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(pattern) = exclude {
            command.env(EXCLUDE_ENV, pattern);
        }
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may have printed "test responder_process ... " on the same line.
                if let Some((_, answer)) = line.split_once(ANSWER)
                    && tx.send(answer.to_owned()).is_err()
                {
                    break;
                }
            }
        });
        let mut process = ResponderProcess {
            child,
            stdin,
            answers,
        };
        assert_eq!(process.answer(), "ready");
        process
    }

    fn answer(&mut self) -> String {
        self.answers
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("responder process did not answer: {e}"))
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.answer()
    }

    /// `set IP=IF,IF IP= ...` (empty interface list = every eligible interface).
    fn set(&mut self, spec: &str) {
        assert_eq!(self.ask(&format!("set {spec}")), "ok");
    }

    fn interfaces(&mut self, ip: &str) -> String {
        self.ask(&format!("interfaces {ip}"))
    }

    /// The value of one counter sample, 0 when absent.
    fn counter(&mut self, name: &str, family: &str, interface: &str) -> u64 {
        let text = self.ask("metrics");
        let sample =
            format!("ferrolb_{name}_total{{family=\"{family}\",interface=\"{interface}\"}} ");
        text.split('|')
            .find_map(|line| line.strip_prefix(&sample))
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

impl Drop for ResponderProcess {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Only the process this test started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Not a test of its own: the body of the responder process that the tests re-execute inside
/// namespace A. Without `FERROLB_L2_NETNS_CHILD` it does nothing.
#[test]
fn responder_process() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let exclude = std::env::var(EXCLUDE_ENV)
            .ok()
            .map(|p| regex::Regex::new(&p).unwrap())
            .into_iter()
            .collect();
        let metrics = L2Metrics::default();
        let mut registry = prometheus_client::registry::Registry::with_prefix("ferrolb");
        metrics.register(&mut registry);
        let config = Config {
            exclude,
            rescan: Duration::from_secs(5),
        };
        let responder = Responder::start(config, metrics).unwrap();
        let say = |s: &str| println!("{ANSWER}{s}");
        say("ready");
        // Tokio's stdin needs a feature the speaker does not use; a thread reads it instead.
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = lines.recv().await {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("set") => {
                    let mut desired = BTreeMap::new();
                    for spec in words {
                        let (ip, names) = spec.split_once('=').unwrap();
                        let names: BTreeSet<String> = names
                            .split(',')
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned)
                            .collect();
                        desired.insert(ip.parse::<IpAddr>().unwrap(), names);
                    }
                    responder.set(desired);
                    say("ok");
                }
                Some("interfaces") => {
                    let ip: IpAddr = words.next().unwrap().parse().unwrap();
                    say(&format!("[{}]", responder.interfaces(ip).join(",")));
                }
                Some("rescan") => {
                    responder.rescan();
                    // Let the manager task run the scan before answering.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    say("ok");
                }
                Some("metrics") => {
                    let mut text = String::new();
                    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
                    say(&text.replace('\n', "|"));
                }
                _ => break,
            }
        }
        responder.shutdown().await;
    });
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn arp_is_answered_for_a_led_ip_only_and_stops_when_released() {
    require_root_and_tools();
    let net = Netns::new();
    let mut responder = ResponderProcess::start(&net, None);
    let mac_a = net.mac(&net.a, "eth0");

    assert_eq!(net.arping(LED4), None, "answered before leading");
    responder.set(&format!("{LED4}="));
    assert_eq!(responder.interfaces(LED4), "[eth0]");
    assert_eq!(net.arping(LED4).as_deref(), Some(mac_a.as_str()));
    assert_eq!(
        net.arping(NOT_LED4),
        None,
        "answered for an IP it does not lead"
    );
    assert!(responder.counter("layer2_requests_received", "ipv4", "eth0") >= 1);
    assert!(responder.counter("layer2_responses_sent", "ipv4", "eth0") >= 1);

    responder.set("");
    assert_eq!(responder.interfaces(LED4), "[]");
    assert_eq!(net.arping(LED4), None, "still answering after release");
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn ndp_is_answered_for_a_led_ip_only_and_stops_when_released() {
    require_root_and_tools();
    let net = Netns::new();
    let mut responder = ResponderProcess::start(&net, None);
    let mac_a = net.mac(&net.a, "eth0");

    assert_eq!(net.ndisc6(LED6), None, "answered before leading");
    responder.set(&format!("{LED6}=eth0"));
    assert_eq!(responder.interfaces(LED6), "[eth0]");
    assert!(
        net.multicast_membership_becomes(SOLICITED_NODE6, true),
        "solicited-node group not joined"
    );
    assert_eq!(net.ndisc6(LED6).as_deref(), Some(mac_a.as_str()));
    assert_eq!(
        net.ndisc6(NOT_LED6),
        None,
        "answered for an IP it does not lead"
    );
    assert!(responder.counter("layer2_requests_received", "ipv6", "eth0") >= 1);
    assert!(responder.counter("layer2_responses_sent", "ipv6", "eth0") >= 1);

    responder.set("");
    assert_eq!(responder.interfaces(LED6), "[]");
    assert_eq!(net.ndisc6(LED6), None, "still answering after release");
    assert!(
        net.multicast_membership_becomes(SOLICITED_NODE6, false),
        "solicited-node group not left"
    );
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn the_kernel_resolves_led_ips_through_the_responder() {
    require_root_and_tools();
    let net = Netns::new();
    let mut responder = ResponderProcess::start(&net, None);
    let mac_a = net.mac(&net.a, "eth0");
    responder.set(&format!("{LED4}=eth0 {LED6}=eth0"));
    // Linux itself checks the replies: ARP fields, and for NDP checksum, hop limit, flags, options.
    for ip in [LED4, LED6] {
        let entry = net.kernel_resolves(ip);
        assert!(entry.contains(&mac_a), "B's neighbour entry: {entry:?}");
    }
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn gratuitous_arp_updates_an_existing_neighbour_entry_at_once() {
    require_root_and_tools();
    let net = Netns::new();
    let mut responder = ResponderProcess::start(&net, None);
    let mac_a = net.mac(&net.a, "eth0");
    net.seed_wrong_neighbour(LED4);
    responder.set(&format!("{LED4}="));
    let took = net
        .neighbour_becomes(LED4, &mac_a, Duration::from_secs(1))
        .unwrap_or_else(|entry| panic!("B still has {entry:?}"));
    eprintln!("B's IPv4 neighbour entry moved to A after {took:?}");
    assert!(responder.counter("layer2_gratuitous_sent", "ipv4", "eth0") >= 2);
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn unsolicited_na_updates_an_existing_neighbour_entry_at_once() {
    require_root_and_tools();
    let net = Netns::new();
    let mut responder = ResponderProcess::start(&net, None);
    let mac_a = net.mac(&net.a, "eth0");
    net.seed_wrong_neighbour(LED6);
    responder.set(&format!("{LED6}="));
    let took = net
        .neighbour_becomes(LED6, &mac_a, Duration::from_secs(1))
        .unwrap_or_else(|entry| panic!("B still has {entry:?}"));
    eprintln!("B's IPv6 neighbour entry moved to A after {took:?}");
    assert!(responder.counter("layer2_gratuitous_sent", "ipv6", "eth0") >= 1);
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn releasing_an_ip_cancels_the_pending_repeats() {
    require_root_and_tools();
    let net = Netns::new();
    let mut responder = ResponderProcess::start(&net, None);
    responder.set(&format!("{LED4}= {LED6}="));
    responder.set("");
    // The 0.5 s and 1 s repeats must not happen; at most the first round (two ARP frames, one
    // NA) went out before the release.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(responder.counter("layer2_gratuitous_sent", "ipv4", "eth0") <= 2);
    assert!(responder.counter("layer2_gratuitous_sent", "ipv6", "eth0") <= 1);
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn repeats_follow_the_schedule_while_led() {
    require_root_and_tools();
    let net = Netns::new();
    let mut responder = ResponderProcess::start(&net, None);
    responder.set(&format!("{LED4}="));
    std::thread::sleep(Duration::from_millis(1300));
    // Rounds at 0, 0.5 and 1 s, two frames each; the 2 s round has not come yet.
    assert_eq!(
        responder.counter("layer2_gratuitous_sent", "ipv4", "eth0"),
        6
    );
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn interfaces_not_configured_for_the_ip_stay_silent() {
    require_root_and_tools();
    let net = Netns::new();
    let mut responder = ResponderProcess::start(&net, None);
    responder.set(&format!("{LED4}=eth9 {LED6}=eth9"));
    assert_eq!(responder.interfaces(LED4), "[]");
    assert_eq!(net.arping(LED4), None);
    assert_eq!(net.ndisc6(LED6), None);
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn excluded_interfaces_stay_silent() {
    require_root_and_tools();
    let net = Netns::new();
    let mut responder = ResponderProcess::start(&net, Some("eth[0-9]+"));
    responder.set(&format!("{LED4}= {LED6}="));
    assert_eq!(responder.interfaces(LED4), "[]");
    assert_eq!(net.arping(LED4), None);
    assert_eq!(net.ndisc6(LED6), None);
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn a_bridge_member_is_replaced_by_its_bridge_on_rescan() {
    require_root_and_tools();
    let net = Netns::new();
    let mut responder = ResponderProcess::start(&net, None);
    responder.set(&format!("{LED4}="));
    assert_eq!(responder.interfaces(LED4), "[eth0]");

    let a = &net.a;
    must(&format!("ip -n {a} link add br0 type bridge"));
    must(&format!("ip -n {a} link set eth0 master br0"));
    must(&format!("ip -n {a} link set br0 up"));
    assert_eq!(responder.ask("rescan"), "ok");
    assert_eq!(responder.interfaces(LED4), "[br0]");
    // Frames arrive on eth0 and are answered from the bridge, with the bridge's MAC.
    let mac_br = net.mac(a, "br0");
    assert_eq!(net.arping(LED4).as_deref(), Some(mac_br.as_str()));
}
