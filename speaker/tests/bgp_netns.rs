//! The BGP shell against a real FRR bgpd: two network namespaces joined by a veth pair, FRR
//! (AS 64512, without zebra) in the router namespace, our shell (AS 64513, eBGP) running on a
//! thread of this test process that entered the speaker namespace, and FRR's own view, read
//! through `vtysh ... json`, as the judge: sessions, routes, next hops, communities,
//! withdrawals, TCP-MD5.
//!
//! Needs root, `ip`, `/usr/lib/frr/bgpd` and `vtysh` (`tests/testbed/install-deps.sh` installs
//! them). Addresses: 198.51.100.0/24 and 2001:db8:fb::/64 on the veth, routes from
//! 203.0.113.0/24 and 2001:db8:fb:1::/64, only inside the namespaces these tests create. A Drop
//! guard kills the bgpd these tests started (by its PID) and deletes the namespaces, also when a
//! test fails. So every test is `#[ignore]`d, and `make netns-test` runs them as root with
//! `-- --ignored`.

// Test code: the harness helpers outside `#[test]` functions may panic like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// `setns(2)` has no safe wrapper among our dependencies; it is the only unsafe call here (in
// common/in_netns.rs).
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferrolb_speaker::announce::bgp::{PeerRoutes, RouteAttributes};
use ferrolb_speaker::bgp::shell::{Listener, Password, Peer, PeerConfig, PeerStatus};
use ferrolb_speaker::bgp::{SessionConfig, State};
use ipnet::IpNet;
use serde_json::Value;

mod common;
#[path = "common/in_netns.rs"]
mod in_netns;
use common::must;
use in_netns::InNetns as Speaker;

const SPEAKER4: &str = "198.51.100.161";
const ROUTER4: &str = "198.51.100.162";
const SPEAKER6: &str = "2001:db8:fb::1";
const ROUTER6: &str = "2001:db8:fb::2";
const ROUTER_ASN: u32 = 64512;
const OUR_ASN: u32 = 64513;
/// 64513:100
const COMMUNITY: u32 = (OUR_ASN << 16) | 100;
const COMMUNITY_TEXT: &str = "64513:100";
const V4_ROUTES: [&str; 3] = ["203.0.113.10/32", "203.0.113.11/32", "203.0.113.12/32"];
const V6_ROUTE: &str = "2001:db8:fb:1::10/128";
const WAIT: Duration = Duration::from_secs(30);

/// These tests need root and the tools; without them they fail loudly rather than pass.
fn require_root_and_tools() {
    common::require_root_and_tools(
        "bgp_netns",
        "network namespaces",
        &["ip", "/usr/lib/frr/bgpd", "vtysh"],
    );
}

/// Polls `probe` until it returns `Some`, for up to `within`.
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
        for (ns, v4, v6) in [(s, SPEAKER4, SPEAKER6), (r, ROUTER4, ROUTER6)] {
            must(&format!("ip -n {ns} addr add {v4}/24 dev eth0"));
            must(&format!("ip -n {ns} addr add {v6}/64 dev eth0 nodad"));
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

/// How FRR is configured towards us.
#[derive(Clone, Copy, Default)]
struct RouterSetup<'a> {
    /// FRR only waits for our connection (we dial); otherwise FRR dials every second.
    passive: bool,
    password: Option<&'a str>,
}

/// FRR's bgpd in the router namespace; killed (by the PID it wrote) on drop, before the
/// namespaces go.
struct Frr {
    dir: String,
    pid: Option<u32>,
}

impl Frr {
    fn start(base: &str, net: &Netns, setup: RouterSetup<'_>) -> Frr {
        let dir = format!("/tmp/{base}-frr");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut frr = Frr { dir, pid: None };
        let dir = &frr.dir;
        // One session over IPv4 carries both families (MP-BGP); no IPv6 neighbor.
        let address = SPEAKER4;
        let mut neighbor = vec![
            format!(" neighbor {address} remote-as {OUR_ASN}"),
            format!(" neighbor {address} timers 3 9"),
            format!(" neighbor {address} timers connect 1"),
        ];
        if setup.passive {
            neighbor.push(format!(" neighbor {address} passive"));
        }
        if let Some(password) = setup.password {
            neighbor.push(format!(" neighbor {address} password {password}"));
        }
        let config = format!(
            "frr defaults traditional\n\
             hostname {base}\n\
             log file {dir}/bgpd.log\n\
             !\n\
             router bgp {ROUTER_ASN}\n \
             bgp router-id {ROUTER4}\n \
             no bgp ebgp-requires-policy\n \
             no bgp default ipv4-unicast\n\
             {neighbors}\n \
             address-family ipv4 unicast\n  \
             neighbor {SPEAKER4} activate\n \
             exit-address-family\n \
             address-family ipv6 unicast\n  \
             neighbor {SPEAKER4} activate\n \
             exit-address-family\n\
             !\n",
            neighbors = neighbor.join("\n"),
        );
        std::fs::write(format!("{dir}/frr.conf"), config).unwrap();
        must(&format!("chown -R frr:frr {dir}"));
        must(&format!(
            "ip netns exec {r} /usr/lib/frr/bgpd -d -u frr -g frr --no_zebra \
             -f {dir}/frr.conf --vty_socket {dir} -z {dir}/zserv.api -i {dir}/bgpd.pid \
             -A 127.0.0.1 -P 0",
            r = net.router
        ));
        let pid_file = format!("{dir}/bgpd.pid");
        let pid = eventually("bgpd's pid file", Duration::from_secs(20), || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
        });
        frr.pid = Some(pid);
        // vtysh answers once bgpd has read its configuration.
        eventually("bgpd's vty", Duration::from_secs(20), || {
            frr.try_json("show bgp summary json")
        });
        frr
    }

    fn try_json(&self, command: &str) -> Option<Value> {
        let out = Command::new("vtysh")
            .args(["--vty_socket", &self.dir, "-d", "bgpd", "-c", command])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn json(&self, command: &str) -> Value {
        self.try_json(command)
            .unwrap_or_else(|| panic!("vtysh {command:?} gave no JSON"))
    }

    /// FRR's state of its session with us.
    fn state(&self) -> String {
        let v = self.json(&format!("show bgp neighbors {SPEAKER4} json"));
        v[SPEAKER4]["bgpState"].as_str().unwrap_or("").to_owned()
    }

    fn wait_established(&self) -> Duration {
        let start = Instant::now();
        eventually("FRR to see the session Established", WAIT, || {
            (self.state() == "Established").then_some(())
        });
        start.elapsed()
    }

    /// The prefixes FRR holds in `family` ("ipv4" or "ipv6").
    fn prefixes(&self, family: &str) -> Vec<String> {
        let v = self.json(&format!("show bgp {family} unicast json"));
        v["routes"]
            .as_object()
            .map(|routes| routes.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// FRR's path for one prefix: (next hops, community string).
    fn path(&self, family: &str, prefix: &str) -> (Vec<String>, String) {
        let v = self.json(&format!("show bgp {family} unicast {prefix} json"));
        let path = &v["paths"][0];
        let next_hops = path["nexthops"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|nh| nh["ip"].as_str().map(str::to_owned))
            .collect();
        let community = path["community"]["string"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (next_hops, community)
    }

    fn wait_prefixes(&self, family: &str, want: &[&str]) {
        let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        let mut last = Vec::new();
        let found = eventually_or(WAIT, || {
            let mut have = self.prefixes(family);
            have.sort();
            let done = have == want;
            last = have;
            done.then_some(())
        });
        assert!(
            found.is_some(),
            "FRR's {family} table is {last:?}, want {want:?}"
        );
    }
}

/// Like [`eventually`], but `None` on time-out.
fn eventually_or<T>(within: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // Only the bgpd these tests started, by the PID it wrote.
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
    fn status(&self, peer: &Peer) -> PeerStatus {
        peer.status().borrow().clone()
    }

    fn wait_status(&self, peer: &Peer, what: &str, check: impl Fn(&PeerStatus) -> bool) {
        let mut status = peer.status();
        let waited = self.handle.block_on(async move {
            tokio::time::timeout(WAIT, async { status.wait_for(|s| check(s)).await.is_ok() })
                .await
                .unwrap_or(false)
        });
        assert!(
            waited,
            "our session never got {what}: {:?}",
            self.status(peer)
        );
    }
}

/// Everything one test creates, torn down in order: the speaker's runtime, bgpd, namespaces.
struct World {
    speaker: Speaker,
    frr: Frr,
    _net: Netns,
}

impl World {
    fn new(setup: RouterSetup<'_>) -> World {
        require_root_and_tools();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let base = format!("fbgp-{}-{n}", std::process::id());
        let net = Netns::new(&base);
        let frr = Frr::start(&base, &net, setup);
        let speaker = Speaker::start(&net.speaker);
        World {
            speaker,
            frr,
            _net: net,
        }
    }
}

fn session_config() -> SessionConfig {
    SessionConfig {
        hold_time: Duration::from_secs(9),
        next_hop_v4: Some(SPEAKER4.parse().unwrap()),
        next_hop_v6: Some(SPEAKER6.parse().unwrap()),
        ..SessionConfig::new(OUR_ASN, ROUTER_ASN, SPEAKER4.parse().unwrap())
    }
}

fn peer_config(password: Option<&str>) -> PeerConfig {
    let mut config = PeerConfig::new(session_config(), ROUTER4.parse().unwrap());
    config.source = Some(SPEAKER4.parse().unwrap());
    config.password = password.map(Password::new);
    config
}

fn routes(v4: &[&str], v6: &[&str]) -> PeerRoutes {
    let attributes = RouteAttributes {
        communities: [COMMUNITY].into(),
        ..RouteAttributes::default()
    };
    v4.iter()
        .chain(v6)
        .map(|p| (p.parse::<IpNet>().unwrap(), attributes.clone()))
        .collect::<BTreeMap<_, _>>()
}

/// Starts a dialing peer in the speaker namespace.
fn dial(world: &World, password: Option<&str>) -> Peer {
    let config = peer_config(password);
    world.speaker.run(async move { Peer::spawn(config, 7) })
}

/// A passive peer and a listener on port 179 in the speaker namespace.
fn listen(world: &World, password: Option<&str>) -> (Peer, Listener) {
    let mut config = peer_config(password);
    config.session.passive = true;
    world.speaker.run(async move {
        let peer = Peer::spawn(config, 7);
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 179);
        let listener = Listener::bind(any).unwrap();
        listener.add_peer(&peer).unwrap();
        (peer, listener)
    })
}

fn shutdown(world: &World, peer: Peer) {
    world.speaker.run(peer.shutdown());
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn frr_learns_our_routes_with_next_hop_and_community_and_sees_a_withdrawal() {
    let world = World::new(RouterSetup {
        passive: true,
        ..RouterSetup::default()
    });
    let peer = dial(&world, None);
    let took = world.frr.wait_established();
    eprintln!("FRR saw the session Established after {took:?}");
    world
        .speaker
        .wait_status(&peer, "Established", |s| s.state == State::Established);

    peer.set_routes(routes(&V4_ROUTES, &[V6_ROUTE]));
    world.frr.wait_prefixes("ipv4", &V4_ROUTES);
    for prefix in V4_ROUTES {
        let (next_hops, community) = world.frr.path("ipv4", prefix);
        assert_eq!(next_hops, [SPEAKER4], "next hop of {prefix}");
        assert_eq!(community, COMMUNITY_TEXT, "community of {prefix}");
    }
    // IPv6 unicast over the IPv4 session (MP-BGP), with our global IPv6 address as next hop.
    world.frr.wait_prefixes("ipv6", &[V6_ROUTE]);
    let (next_hops, community) = world.frr.path("ipv6", V6_ROUTE);
    assert!(
        next_hops.iter().any(|nh| nh == SPEAKER6),
        "next hops of {V6_ROUTE}: {next_hops:?}"
    );
    assert_eq!(community, COMMUNITY_TEXT);
    world
        .speaker
        .wait_status(&peer, "4 prefixes announced", |s| {
            s.prefixes_announced == 4 && s.established_since.is_some()
        });

    // Withdraw one.
    peer.set_routes(routes(&V4_ROUTES[..2], &[V6_ROUTE]));
    world.frr.wait_prefixes("ipv4", &V4_ROUTES[..2]);
    world.frr.wait_prefixes("ipv6", &[V6_ROUTE]);

    // Shutting down ends FRR's session at once (Cease), not after its hold time.
    let start = Instant::now();
    shutdown(&world, peer);
    eventually("FRR to see the session end", Duration::from_secs(5), || {
        (world.frr.state() != "Established").then_some(())
    });
    let v = world
        .frr
        .json(&format!("show bgp neighbors {SPEAKER4} json"));
    eprintln!(
        "FRR saw the session end after {:?}: {}",
        start.elapsed(),
        v[SPEAKER4]["lastResetDueTo"]
    );
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn frr_dialing_our_listener_reaches_the_passive_session() {
    let world = World::new(RouterSetup::default());
    let (peer, _listener) = listen(&world, None);
    world.frr.wait_established();
    world
        .speaker
        .wait_status(&peer, "Established", |s| s.state == State::Established);
    peer.set_routes(routes(&V4_ROUTES[..1], &[]));
    world.frr.wait_prefixes("ipv4", &V4_ROUTES[..1]);
    shutdown(&world, peer);
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn tcp_md5_with_the_same_password_establishes_when_we_dial() {
    let password = "ferrolb-md5-test";
    let world = World::new(RouterSetup {
        passive: true,
        password: Some(password),
    });
    let peer = dial(&world, Some(password));
    world.frr.wait_established();
    peer.set_routes(routes(&V4_ROUTES[..1], &[]));
    world.frr.wait_prefixes("ipv4", &V4_ROUTES[..1]);
    shutdown(&world, peer);
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn tcp_md5_with_the_same_password_establishes_when_frr_dials_our_listener() {
    let password = "ferrolb-md5-test";
    let world = World::new(RouterSetup {
        passive: false,
        password: Some(password),
    });
    let (peer, _listener) = listen(&world, Some(password));
    world.frr.wait_established();
    peer.set_routes(routes(&V4_ROUTES[..1], &[]));
    world.frr.wait_prefixes("ipv4", &V4_ROUTES[..1]);
    shutdown(&world, peer);
}

#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn tcp_md5_with_a_wrong_password_never_establishes() {
    let world = World::new(RouterSetup {
        passive: true,
        password: Some("the-right-one"),
    });
    let peer = dial(&world, Some("a-wrong-one"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        assert_ne!(world.frr.state(), "Established", "FRR accepted a wrong key");
        assert_ne!(world.speaker.status(&peer).state, State::Established);
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = world.speaker.status(&peer);
    eprintln!("after 10 s: {status:?}");
    assert!(status.last_error.is_some(), "no error reported: {status:?}");
    shutdown(&world, peer);
}

/// The `vrf` of a peer binds the session's socket to that device (SO_BINDTODEVICE), so the
/// session follows the device's routes, not the namespace's main table. This kernel has no VRF
/// devices, so the test binds to a plain interface, which the option treats the same way for
/// routing: a host route sends the router's address into a dead-end veth, and only the bound
/// session reaches FRR, through eth0. The next hop FRR sees is the session's local address,
/// whatever next hop the configuration held, since that is where the router reached us.
#[test]
#[ignore = "needs root and network namespaces: make netns-test"]
fn a_session_bound_to_a_device_follows_it_and_sends_its_local_address_as_next_hop() {
    let world = World::new(RouterSetup {
        passive: true,
        ..RouterSetup::default()
    });
    let ns = &world._net.speaker;
    must(&format!(
        "ip -n {ns} link add dead0 type veth peer name dead1"
    ));
    must(&format!("ip -n {ns} link set dead0 up"));
    must(&format!("ip -n {ns} link set dead1 up"));
    must(&format!("ip -n {ns} route add {ROUTER4}/32 dev dead0"));

    let spawn = |vrf: Option<&str>| {
        let mut config = peer_config(None);
        config.source = None;
        config.vrf = vrf.map(str::to_owned);
        config.dial_timeout = Duration::from_secs(2);
        // Not this node's address on the router's link: the local address must win.
        config.session.next_hop_v4 = Some("192.0.2.99".parse().unwrap());
        world.speaker.run(async move { Peer::spawn(config, 7) })
    };

    // Unbound, the session follows the host route into the dead end.
    let unbound = spawn(None);
    world
        .speaker
        .wait_status(&unbound, "a failed attempt", |s| s.last_error.is_some());
    assert_ne!(world.speaker.status(&unbound).state, State::Established);
    shutdown(&world, unbound);

    // A device that does not exist is named in the error.
    let missing = spawn(Some("vrf-blue"));
    world
        .speaker
        .wait_status(&missing, "a failed attempt", |s| s.last_error.is_some());
    let error = world.speaker.status(&missing).last_error.unwrap();
    assert!(
        error.contains(r#"binding to VRF "vrf-blue": no such device on this node"#),
        "{error}"
    );
    shutdown(&world, missing);

    let bound = spawn(Some("eth0"));
    world.frr.wait_established();
    world
        .speaker
        .wait_status(&bound, "Established", |s| s.state == State::Established);
    bound.set_routes(routes(&V4_ROUTES[..1], &[]));
    world.frr.wait_prefixes("ipv4", &V4_ROUTES[..1]);
    let (next_hops, _) = world.frr.path("ipv4", V4_ROUTES[0]);
    assert_eq!(next_hops, [SPEAKER4]);
    shutdown(&world, bound);
}
