//! What to send (pure): the reply to a received frame, and the unsolicited announcements made on
//! taking over an address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::packet::{
    Arp, ArpFrame, ArpOp, Ethernet, Frame, MacAddr, NDP_HOP_LIMIT, Ndp, NdpFrame,
    NeighborAdvertisement, solicited_node,
};

/// All-nodes multicast: where unsolicited advertisements and answers to DAD probes go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The interface a frame arrived on, as far as answering needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkAddrs {
    /// The interface's hardware address (source of every frame we send).
    pub mac: MacAddr,
    /// Whether IPv6 is up on the interface (it has a usable link-local address); NDP is only
    /// answered where it is.
    pub ipv6: bool,
}

/// The address a request asks about, if the frame is a request (ARP request or Neighbor
/// Solicitation) at all.
pub fn request_target(frame: &Frame) -> Option<IpAddr> {
    match frame {
        Frame::Arp(f) if f.arp.op == ArpOp::Request => Some(IpAddr::V4(f.arp.target_ip)),
        Frame::Ndp(NdpFrame {
            message: Ndp::Solicitation(ns),
            ..
        }) => Some(IpAddr::V6(ns.target)),
        _ => None,
    }
}

/// The reply to `frame` received on the interface `link`, if it asks for an address that `leads`
/// says we answer for on this interface.
pub fn reply(frame: &Frame, link: &LinkAddrs, leads: impl Fn(IpAddr) -> bool) -> Option<Frame> {
    match frame {
        Frame::Arp(f) => reply_arp(f, link, leads),
        Frame::Ndp(f) => reply_ndp(f, link, leads),
    }
}

fn reply_arp(f: &ArpFrame, link: &LinkAddrs, leads: impl Fn(IpAddr) -> bool) -> Option<Frame> {
    let arp = &f.arp;
    if arp.op != ArpOp::Request
        // Our own frames (the kernel filter already drops outgoing ones; this is the backstop).
        || f.eth.src == link.mac
        || arp.sender_mac.is_multicast()
        // An announcement (gratuitous ARP) by someone else is not a question.
        || arp.sender_ip == arp.target_ip
        || !leads(IpAddr::V4(arp.target_ip))
    {
        return None;
    }
    Some(Frame::Arp(ArpFrame {
        eth: Ethernet {
            dst: arp.sender_mac,
            src: link.mac,
        },
        arp: Arp {
            op: ArpOp::Reply,
            sender_mac: link.mac,
            sender_ip: arp.target_ip,
            target_mac: arp.sender_mac,
            // For an RFC 5227 probe this is 0.0.0.0, as the RFC's defence reply has it.
            target_ip: arp.sender_ip,
        },
    }))
}

fn reply_ndp(f: &NdpFrame, link: &LinkAddrs, leads: impl Fn(IpAddr) -> bool) -> Option<Frame> {
    let Ndp::Solicitation(ns) = f.message else {
        return None;
    };
    if !link.ipv6 {
        return None;
    }
    // RFC 4861 §7.1.1: a valid NS was not routed, and a DAD probe (from ::) goes to the
    // solicited-node group and carries no source link-layer address.
    let dad = f.src.is_unspecified();
    if f.hop_limit != NDP_HOP_LIMIT
        || f.eth.src == link.mac
        || ns.target.is_multicast()
        || (dad && (f.dst != solicited_node(ns.target) || ns.source_mac.is_some()))
        || !leads(IpAddr::V6(ns.target))
    {
        return None;
    }
    let (dst, dst_mac, solicited) = if dad {
        // RFC 4861 §7.2.4: answer a DAD probe to all-nodes, without the S flag.
        (ALL_NODES, MacAddr::ipv6_multicast(ALL_NODES), false)
    } else {
        (f.src, ns.source_mac.unwrap_or(f.eth.src), true)
    };
    Some(Frame::Ndp(NdpFrame {
        eth: Ethernet {
            dst: dst_mac,
            src: link.mac,
        },
        // From the target itself, as Linux answers for its own addresses. A link-local source
        // is also legal (RFC 4861 §7.2.2 "an address assigned to the interface") and Linux
        // accepts it, but ndisc6 ignores any NA whose source is not the target.
        src: ns.target,
        dst,
        hop_limit: NDP_HOP_LIMIT,
        message: Ndp::Advertisement(NeighborAdvertisement {
            router: false,
            solicited,
            override_flag: true,
            target: ns.target,
            target_mac: Some(link.mac),
        }),
    }))
}

/// Gratuitous ARP for `ip`, in both forms Linux uses to update an existing neighbour entry even
/// inside its lock time (`arp_is_garp`): a broadcast request with sender = target = `ip`, and a
/// broadcast reply that additionally has target hardware address = sender hardware address.
pub fn gratuitous_arp(mac: MacAddr, ip: Ipv4Addr) -> [Frame; 2] {
    let eth = Ethernet {
        dst: MacAddr::BROADCAST,
        src: mac,
    };
    let request = Arp {
        op: ArpOp::Request,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: MacAddr::ZERO,
        target_ip: ip,
    };
    let reply = Arp {
        op: ArpOp::Reply,
        target_mac: mac,
        ..request
    };
    [
        Frame::Arp(ArpFrame { eth, arp: request }),
        Frame::Arp(ArpFrame { eth, arp: reply }),
    ]
}

/// Unsolicited Neighbor Advertisement for `ip` (RFC 4861 §7.2.6): to all-nodes, Override set,
/// Solicited clear, with our link-layer address.
pub fn unsolicited_na(mac: MacAddr, ip: Ipv6Addr) -> Frame {
    Frame::Ndp(NdpFrame {
        eth: Ethernet {
            dst: MacAddr::ipv6_multicast(ALL_NODES),
            src: mac,
        },
        // From the address itself, like Linux's own unsolicited NA (`ndisc_send_unsol_na`).
        src: ip,
        dst: ALL_NODES,
        hop_limit: NDP_HOP_LIMIT,
        message: Ndp::Advertisement(NeighborAdvertisement {
            router: false,
            solicited: false,
            override_flag: true,
            target: ip,
            target_mac: Some(mac),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::packet::{NeighborSolicitation, build, parse};

    const OURS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
    const THEIRS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
    const LED4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 250);
    const ASKER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 202);
    const LED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xfe, 0, 0, 0, 0, 0x250);
    const ASKER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xfe, 0, 0, 0, 0, 2);

    fn link() -> LinkAddrs {
        LinkAddrs {
            mac: OURS,
            ipv6: true,
        }
    }

    fn leads_only(ip: IpAddr) -> impl Fn(IpAddr) -> bool {
        move |asked| asked == ip
    }

    fn arp_request(sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Frame {
        Frame::Arp(ArpFrame {
            eth: Ethernet {
                dst: MacAddr::BROADCAST,
                src: THEIRS,
            },
            arp: Arp {
                op: ArpOp::Request,
                sender_mac: THEIRS,
                sender_ip,
                target_mac: MacAddr::ZERO,
                target_ip,
            },
        })
    }

    fn ns(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, source_mac: Option<MacAddr>) -> Frame {
        Frame::Ndp(NdpFrame {
            eth: Ethernet {
                dst: MacAddr::ipv6_multicast(dst),
                src: THEIRS,
            },
            src,
            dst,
            hop_limit: 255,
            message: Ndp::Solicitation(NeighborSolicitation { target, source_mac }),
        })
    }

    #[test]
    fn arp_request_for_led_ip_gets_unicast_reply_with_our_mac() {
        let got = reply(&arp_request(ASKER4, LED4), &link(), leads_only(LED4.into()));
        let expected = Frame::Arp(ArpFrame {
            eth: Ethernet {
                dst: THEIRS,
                src: OURS,
            },
            arp: Arp {
                op: ArpOp::Reply,
                sender_mac: OURS,
                sender_ip: LED4,
                target_mac: THEIRS,
                target_ip: ASKER4,
            },
        });
        assert_eq!(got, Some(expected));
    }

    #[test]
    fn arp_request_for_other_ip_is_ignored() {
        let other = Ipv4Addr::new(198, 51, 100, 251);
        assert_eq!(
            reply(
                &arp_request(ASKER4, other),
                &link(),
                leads_only(LED4.into())
            ),
            None
        );
    }

    #[test]
    fn arp_probe_from_unspecified_sender_is_answered() {
        let got = reply(
            &arp_request(Ipv4Addr::UNSPECIFIED, LED4),
            &link(),
            leads_only(LED4.into()),
        );
        assert!(
            matches!(got, Some(Frame::Arp(f)) if f.arp.target_ip == Ipv4Addr::UNSPECIFIED && f.eth.dst == THEIRS)
        );
    }

    #[test]
    fn gratuitous_arp_from_someone_else_is_not_answered() {
        assert_eq!(
            reply(&arp_request(LED4, LED4), &link(), leads_only(LED4.into())),
            None
        );
    }

    #[test]
    fn arp_reply_and_our_own_request_are_ignored() {
        let Frame::Arp(mut f) = arp_request(ASKER4, LED4) else {
            unreachable!()
        };
        f.arp.op = ArpOp::Reply;
        assert_eq!(
            reply(&Frame::Arp(f), &link(), leads_only(LED4.into())),
            None
        );
        let Frame::Arp(mut own) = arp_request(ASKER4, LED4) else {
            unreachable!()
        };
        own.eth.src = OURS;
        assert_eq!(
            reply(&Frame::Arp(own), &link(), leads_only(LED4.into())),
            None
        );
    }

    #[test]
    fn ns_for_led_ip_gets_solicited_override_na_from_the_target() {
        let asked = ns(ASKER6, solicited_node(LED6), LED6, Some(THEIRS));
        let Some(Frame::Ndp(na)) = reply(&asked, &link(), leads_only(LED6.into())) else {
            panic!("no NA")
        };
        assert_eq!(na.eth.dst, THEIRS);
        assert_eq!(na.eth.src, OURS);
        assert_eq!(na.src, LED6);
        assert_eq!(na.dst, ASKER6);
        assert_eq!(na.hop_limit, 255);
        assert_eq!(
            na.message,
            Ndp::Advertisement(NeighborAdvertisement {
                router: false,
                solicited: true,
                override_flag: true,
                target: LED6,
                target_mac: Some(OURS),
            })
        );
        // And it survives the wire with a valid checksum.
        assert_eq!(parse(&build(&Frame::Ndp(na))).ok(), Some(Frame::Ndp(na)));
    }

    #[test]
    fn ns_without_source_option_is_answered_to_the_ethernet_source() {
        let asked = ns(ASKER6, LED6, LED6, None);
        let Some(Frame::Ndp(na)) = reply(&asked, &link(), leads_only(LED6.into())) else {
            panic!("no NA")
        };
        assert_eq!(na.eth.dst, THEIRS);
    }

    #[test]
    fn dad_probe_is_answered_to_all_nodes_without_solicited_flag() {
        let asked = ns(Ipv6Addr::UNSPECIFIED, solicited_node(LED6), LED6, None);
        let Some(Frame::Ndp(na)) = reply(&asked, &link(), leads_only(LED6.into())) else {
            panic!("no NA")
        };
        assert_eq!(na.dst, ALL_NODES);
        assert_eq!(na.eth.dst, MacAddr([0x33, 0x33, 0, 0, 0, 1]));
        assert!(matches!(na.message, Ndp::Advertisement(a) if !a.solicited && a.override_flag));
    }

    #[test]
    fn invalid_dad_probes_are_ignored() {
        let to_unicast = ns(Ipv6Addr::UNSPECIFIED, LED6, LED6, None);
        let with_slla = ns(
            Ipv6Addr::UNSPECIFIED,
            solicited_node(LED6),
            LED6,
            Some(THEIRS),
        );
        for asked in [to_unicast, with_slla] {
            assert_eq!(reply(&asked, &link(), leads_only(LED6.into())), None);
        }
    }

    #[test]
    fn ns_with_low_hop_limit_or_other_target_or_without_ipv6_is_ignored() {
        let Frame::Ndp(mut routed) = ns(ASKER6, solicited_node(LED6), LED6, Some(THEIRS)) else {
            unreachable!()
        };
        routed.hop_limit = 254;
        assert_eq!(
            reply(&Frame::Ndp(routed), &link(), leads_only(LED6.into())),
            None
        );
        let other = Ipv6Addr::new(0x2001, 0xdb8, 0xfe, 0, 0, 0, 0, 0x251);
        let asked = ns(ASKER6, solicited_node(other), other, Some(THEIRS));
        assert_eq!(reply(&asked, &link(), leads_only(LED6.into())), None);
        let no_ll = LinkAddrs {
            ipv6: false,
            ..link()
        };
        let asked = ns(ASKER6, solicited_node(LED6), LED6, Some(THEIRS));
        assert_eq!(reply(&asked, &no_ll, leads_only(LED6.into())), None);
    }

    #[test]
    fn request_target_names_only_requests() {
        assert_eq!(
            request_target(&arp_request(ASKER4, LED4)),
            Some(IpAddr::V4(LED4))
        );
        assert_eq!(
            request_target(&ns(ASKER6, LED6, LED6, None)),
            Some(IpAddr::V6(LED6))
        );
        assert_eq!(request_target(&unsolicited_na(OURS, LED6)), None);
        assert_eq!(request_target(&gratuitous_arp(OURS, LED4)[1]), None);
    }

    #[test]
    fn gratuitous_arp_has_sender_equal_target_and_reply_form_repeats_the_mac() {
        let [Frame::Arp(req), Frame::Arp(rep)] = gratuitous_arp(OURS, LED4) else {
            panic!("not ARP")
        };
        for f in [req, rep] {
            assert_eq!(f.eth.dst, MacAddr::BROADCAST);
            assert_eq!((f.arp.sender_ip, f.arp.target_ip), (LED4, LED4));
            assert_eq!(f.arp.sender_mac, OURS);
        }
        assert_eq!(req.arp.op, ArpOp::Request);
        assert_eq!((rep.arp.op, rep.arp.target_mac), (ArpOp::Reply, OURS));
    }

    #[test]
    fn unsolicited_na_goes_to_all_nodes_with_override() {
        let Frame::Ndp(na) = unsolicited_na(OURS, LED6) else {
            panic!("not NDP")
        };
        assert_eq!((na.src, na.dst, na.hop_limit), (LED6, ALL_NODES, 255));
        assert!(matches!(na.message,
            Ndp::Advertisement(a) if a.override_flag && !a.solicited && a.target_mac == Some(OURS)));
    }
}
