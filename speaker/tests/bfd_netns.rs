//! The BFD shell against a real FRR bfdd: two network namespaces joined by a veth pair, FRR's
//! bfdd (without zebra) in the router namespace peering with us over single hop, our shell
//! running on a thread of this test process that entered the speaker namespace, and FRR's own
//! view, read through `vtysh ... show bfd peers json`, as the judge: the session comes up with
//! our timers, a dead bfdd and a cut link are detected, our AdminDown is seen.
//!
//! Needs root, `ip`, `/usr/lib/frr/bfdd` and `vtysh` (`tests/testbed/install-deps.sh` installs
//! them). Addresses: 198.51.100.171 (ours) and 198.51.100.172 (FRR's), only inside the
//! namespaces these tests create (prefix `ftb-bfdh-` and the process id). A Drop guard kills the
//! bfdd these tests started (by its PID) and deletes the namespaces, also when a test fails. So
//! every test is `#[ignore]`d, and `make netns-test` runs them as root with `-- --ignored`.

// Test code: the harness helpers outside `#[test]` functions may panic like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// `setns(2)` has no safe wrapper among our dependencies; it is the only unsafe call here (in
// common/in_netns.rs).
#![allow(unsafe_code)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferrolb_speaker::bfd::{Bfd, BfdState, Diag, Hop, PeerKey, Profile, State, Timers};
use serde_json::Value;
use tokio::sync::watch;

mod common;
#[path = "common/in_netns.rs"]
mod in_netns;
use common::must;
use in_netns::InNetns as Speaker;

const SPEAKER4: &str = "198.51.100.171";
const ROUTER4: &str = "198.51.100.172";
const WAIT: Duration = Duration::from_secs(20);
/// The bound on detecting a failure: FRR's timers give a 300 ms detection time, so this is
/// slack for a loaded machine, not a measurement.
const DETECT_WITHIN: Duration = Duration::from_secs(3);

fn require_root_and_tools() {
    common::require_root_and_tools(
        "bfd_netns",
        "network namespaces",
        &["ip", "/usr/lib/frr/bfdd", "vtysh"],
    );
}

/// Like `eventually`, but `None` on time-out.
fn eventually_or<T>(within: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn eventually<T>(what: &str, within: Duration, probe: impl FnMut() -> Option<T>) -> T {
    eventually_or(within, probe).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// The speaker and router namespaces, one veth pair between them; deleted on drop.
struct Netns {
    speaker: String,
    router: String,
}

impl Netns {
    fn new(base: &str) -> Netns {
        let net = Netns {
            speaker: format!("{base}-spk"),
            router: format!("{base}-rtr"),
        };
        let (s, r) = (&net.speaker, &net.router);
        must(&format!("ip netns add {s}"));
        must(&format!("ip netns add {r}"));
        must(&format!(
            "ip -n {s} link add eth0 type veth peer name eth0 netns {r}"
        ));
        for (ns, v4) in [(s, SPEAKER4), (r, ROUTER4)] {
            must(&format!("ip -n {ns} addr add {v4}/24 dev eth0"));
            must(&format!("ip -n {ns} link set lo up"));
            must(&format!("ip -n {ns} link set eth0 up"));
        }
        net
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.speaker, &self.router] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// FRR's bfdd in the router namespace, peering with us at 100 ms / 100 ms / 3; killed (by the
/// PID it wrote) on drop, before the namespaces go.
struct Frr {
    dir: String,
    pid: Option<u32>,
}

impl Frr {
    fn start(base: &str, net: &Netns) -> Frr {
        let dir = format!("/tmp/{base}-frr");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut frr = Frr { dir, pid: None };
        let dir = &frr.dir;
        let config = format!(
            "frr defaults traditional\n\
             hostname {base}\n\
             log file {dir}/bfdd.log\n\
             !\n\
             bfd\n \
             peer {SPEAKER4} local-address {ROUTER4}\n  \
             receive-interval 100\n  \
             transmit-interval 100\n  \
             detect-multiplier 3\n \
             exit\n\
             exit\n\
             !\n"
        );
        std::fs::write(format!("{dir}/frr.conf"), config).unwrap();
        must(&format!("chown -R frr:frr {dir}"));
        must(&format!(
            "ip netns exec {r} /usr/lib/frr/bfdd -d -u frr -g frr -f {dir}/frr.conf \
             --vty_socket {dir} -z {dir}/zserv.api -i {dir}/bfdd.pid --bfdctl {dir}/bfdd.sock \
             -A 127.0.0.1 -P 0",
            r = net.router
        ));
        let pid_file = format!("{dir}/bfdd.pid");
        let pid = eventually("bfdd's pid file", Duration::from_secs(20), || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
        });
        frr.pid = Some(pid);
        eventually("bfdd's vty", Duration::from_secs(20), || frr.try_peer());
        frr
    }

    /// FRR's view of its session with us.
    fn try_peer(&self) -> Option<Value> {
        let out = Command::new("vtysh")
            .args([
                "--vty_socket",
                &self.dir,
                "-d",
                "bfdd",
                "-c",
                "show bfd peers json",
            ])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|p| p["peer"] == SPEAKER4)
            .cloned()
    }

    fn peer(&self) -> Value {
        self.try_peer().expect("vtysh shows no BFD peer")
    }

    fn wait_status(&self, want: &str) -> Value {
        let mut last = Value::Null;
        let found = eventually_or(WAIT, || {
            let p = self.try_peer()?;
            let done = p["status"] == want;
            last = p.clone();
            done.then_some(p)
        });
        found.unwrap_or_else(|| panic!("FRR never saw the session {want}: {last}"))
    }

    /// SIGKILL, so bfdd cannot say goodbye: we must find out by the detection time. Not
    /// waiting for `/proc` to let go of it, which takes its reaper's time, not bfdd's.
    fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            must(&format!("kill -9 {pid}"));
        }
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // Only the bfdd these tests started, by the PID it wrote.
            let _ = Command::new("kill").arg(pid.to_string()).output();
            let gone = eventually_or(Duration::from_secs(5), || {
                (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
            });
            if gone.is_none() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
            }
        }
        if std::env::var_os("FERROLB_KEEP_FRR_LOGS").is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The speaker namespace's runtime, with what these tests ask of it.
impl Speaker {
    /// Waits for our session to satisfy `check`; how long it took.
    fn wait(
        &self,
        state: &watch::Receiver<BfdState>,
        what: &str,
        within: Duration,
        check: impl Fn(&BfdState) -> bool + Send + Sync + 'static,
    ) -> Duration {
        let mut rx = state.clone();
        let start = Instant::now();
        let ok = self.run(async move {
            tokio::time::timeout(
                within,
                async move { rx.wait_for(|s| check(s)).await.is_ok() },
            )
            .await
            .unwrap_or(false)
        });
        assert!(ok, "our session never got {what}: {:?}", *state.borrow());
        start.elapsed()
    }
}

/// Everything one test creates, torn down in order: the speaker's runtime (and our shell in
/// it), bfdd, the namespaces.
struct World {
    speaker: Speaker,
    frr: Frr,
    net: Netns,
}

impl World {
    fn new() -> World {
        require_root_and_tools();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let base = format!("ftb-bfdh-{}-{n}", std::process::id());
        let net = Netns::new(&base);
        let frr = Frr::start(&base, &net);
        let speaker = Speaker::start(&net.speaker);
        World { speaker, frr, net }
    }
}

fn key() -> PeerKey {
    PeerKey {
        peer: ROUTER4.parse().unwrap(),
        local: SPEAKER4.parse().unwrap(),
        interface: None,
        hop: Hop::Single,
    }
}

fn profile(tx_ms: u64, rx_ms: u64, detect_mult: u8) -> Profile {
    Profile {
        timers: Timers {
            desired_min_tx: Duration::from_millis(tx_ms),
            required_min_rx: Duration::from_millis(rx_ms),
            detect_mult,
        },
        passive: false,
        minimum_ttl: 254,
    }
}

/// Starts our shell with one session and waits until both sides are Up.
fn up(world: &World, profile: Profile) -> (Bfd, watch::Receiver<BfdState>) {
    let (bfd, state) = world.speaker.run(async move {
        let bfd = Bfd::spawn(42);
        let state = bfd.add_peer(key(), profile).await.unwrap();
        (bfd, state)
    });
    let took = world
        .speaker
        .wait(&state, "Up", WAIT, |s| s.state == State::Up);
    world.frr.wait_status("up");
    eprintln!("Up after {took:?}: {:?}", *state.borrow());
    (bfd, state)
}

fn shutdown(world: &World, bfd: Bfd) {
    world.speaker.run(bfd.shutdown());
}

fn ms(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn session_comes_up_and_frr_reports_our_timers() {
    let world = World::new();
    let (bfd, state) = up(&world, profile(200, 150, 4));
    // Once the Poll Sequence of reaching Up is over, FRR holds our profile's values.
    let peer = eventually("FRR to learn our Up timers", WAIT, || {
        let p = world.frr.peer();
        (ms(&p["remote-transmit-interval"]) == 200).then_some(p)
    });
    eprintln!("FRR's view: {peer}");
    assert_eq!(ms(&peer["remote-receive-interval"]), 150);
    assert_eq!(ms(&peer["remote-transmit-interval"]), 200);
    assert_eq!(ms(&peer["remote-detect-multiplier"]), 4);
    assert_eq!(
        peer["remote-id"].as_u64(),
        Some(u64::from(state.borrow().local_discriminator))
    );
    let ours = *state.borrow();
    // max(our 200 ms, FRR's required 100 ms); FRR's 3 × max(our 150 ms, FRR's 100 ms).
    assert_eq!(ours.tx_interval, Duration::from_millis(200));
    assert_eq!(ours.detection_time, Some(Duration::from_millis(450)));
    assert_eq!(
        ours.remote_discriminator,
        u32::try_from(ms(&peer["id"])).unwrap()
    );
    let counters = bfd.counters();
    assert_eq!(counters.bad_ttl.load(Ordering::Relaxed), 0);
    assert_eq!(counters.unknown_session.load(Ordering::Relaxed), 0);
    shutdown(&world, bfd);
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn a_killed_bfdd_is_detected_within_the_detection_time() {
    let mut world = World::new();
    let (bfd, state) = up(&world, profile(100, 100, 3));
    world.speaker.wait(&state, "FRR's fast timers", WAIT, |s| {
        s.detection_time == Some(Duration::from_millis(300))
    });
    let start = Instant::now();
    world.frr.kill();
    world
        .speaker
        .wait(&state, "Down after bfdd died", DETECT_WITHIN, |s| {
            s.state == State::Down
        });
    // From the event, not from the start of the wait: killing bfdd includes seeing it gone.
    let took = start.elapsed();
    assert!(took < DETECT_WITHIN, "{took:?}");
    eprintln!(
        "declared down {took:?} after SIGKILL (detection time 300 ms): {:?}",
        *state.borrow()
    );
    assert_eq!(state.borrow().diag, Diag::ControlDetectionTimeExpired);
    shutdown(&world, bfd);
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn frr_sees_us_administratively_down() {
    let world = World::new();
    let (bfd, _state) = up(&world, profile(100, 100, 3));
    let start = Instant::now();
    let bfd = world.speaker.run(async move {
        bfd.remove_peer(&key()).await;
        bfd
    });
    let peer = world.frr.wait_status("down");
    eprintln!("FRR saw us down after {:?}: {peer}", start.elapsed());
    assert!(start.elapsed() < DETECT_WITHIN);
    assert_eq!(peer["remote-diagnostic"], "administratively down");
    shutdown(&world, bfd);
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn a_cut_link_is_detected() {
    let world = World::new();
    let (bfd, state) = up(&world, profile(100, 100, 3));
    world.speaker.wait(&state, "FRR's fast timers", WAIT, |s| {
        s.detection_time == Some(Duration::from_millis(300))
    });
    let start = Instant::now();
    must(&format!("ip -n {} link set eth0 down", world.net.speaker));
    world
        .speaker
        .wait(&state, "Down after the link went", DETECT_WITHIN, |s| {
            s.state == State::Down
        });
    // From the event, not from the start of the wait: killing bfdd includes seeing it gone.
    let took = start.elapsed();
    assert!(took < DETECT_WITHIN, "{took:?}");
    eprintln!(
        "declared down {took:?} after the link cut: {:?}",
        *state.borrow()
    );
    assert_eq!(state.borrow().diag, Diag::ControlDetectionTimeExpired);
    let peer = world.frr.wait_status("down");
    eprintln!("FRR's view: {peer}");
    shutdown(&world, bfd);
}
