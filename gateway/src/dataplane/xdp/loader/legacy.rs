//! Layouts of older ABIs, read once when upgrading from them. Nothing else uses them.
use super::*;

/// `FlowValue` of ABI 2 (one flow table, 48 bytes, no responder ISN).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FlowValueV2 {
    pub last_seen_ns: u64,
    pub generation: u64,
    pub dev_a: u64,
    pub dev_b: u64,
    pub epoch_a: u32,
    pub epoch_b: u32,
    pub rule: u32,
    pub state: u8,
    pub initiator: u8,
    pub reason: u8,
    pub _pad: u8,
}
const _: () = assert!(std::mem::size_of::<FlowValueV2>() == 48);
// SAFETY: repr(C), integer fields only, no implicit padding (size asserted above).
unsafe impl Pod for FlowValueV2 {}

impl FlowValueV2 {
    /// The same flow under ABI 3. Its state is kept: ABI 2 called a TCP flow established
    /// once the responder answered, and its handshake ACK is long past, so it could not
    /// be confirmed again. It goes to the new table like any flow and earns its place in
    /// the established one on its next packet, within its device's promotion budget (an
    /// ABI 2 "established" flow may be a SYN flood's entry).
    pub(crate) fn upgrade(&self) -> FlowValue {
        FlowValue {
            last_seen_ns: self.last_seen_ns,
            generation: self.generation,
            dev_a: self.dev_a,
            dev_b: self.dev_b,
            epoch_a: self.epoch_a,
            epoch_b: self.epoch_b,
            rule: self.rule,
            state: self.state,
            initiator: self.initiator,
            reason: self.reason,
            ..FlowValue::default()
        }
    }
}

/// The flow table of an ABI 2 datapath pinned in `dir`, converted.
pub(crate) fn read_v2_flows(dir: &std::path::Path) -> Option<Vec<(FlowKey, FlowValue)>> {
    let data = MapData::from_pin(dir.join(MAP_FLOWS)).ok()?;
    let old = HashMap::<_, FlowKey, FlowValueV2>::try_from(Map::LruHashMap(data)).ok()?;
    Some(
        old.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.upgrade()))
            .collect(),
    )
}

/// The last ABI whose flow keys did not name an echo's requester ([`FlowKey::echo`]).
pub(crate) const LAST_UNDIRECTED_ECHO: u32 = 10;

/// A flow key of ABI 10 or earlier under this ABI: an echo flow's key names its requester
/// ([`echo_of_flow`]). Other keys are unchanged.
pub(crate) fn directed_echo_key(k: &FlowKey, v: &FlowValue) -> FlowKey {
    FlowKey {
        echo: echo_of_flow(k.proto, v.initiator),
        ..*k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_flow_key_of_abi_10_names_its_requester() {
        let key = |proto: u8, echo: u8| FlowKey {
            addr_a: [1; 16],
            addr_b: [2; 16],
            port_a: 7,
            port_b: 7,
            proto,
            family: FAMILY_V6,
            echo,
            _pad: 0,
        };
        let by = |initiator: u8| FlowValue {
            initiator,
            ..FlowValue::default()
        };
        let old = key(PROTO_ICMPV6, 0);
        assert_eq!(
            directed_echo_key(&old, &by(0)),
            key(PROTO_ICMPV6, ECHO_BY_A)
        );
        assert_eq!(
            directed_echo_key(&old, &by(1)),
            key(PROTO_ICMPV6, ECHO_BY_B)
        );
        let old = key(PROTO_ICMP, 0);
        assert_eq!(directed_echo_key(&old, &by(1)), key(PROTO_ICMP, ECHO_BY_B));
        let tcp = key(PROTO_TCP, 0);
        assert_eq!(directed_echo_key(&tcp, &by(1)), tcp);
    }

    #[test]
    fn an_abi_2_flow_keeps_its_identity_stamps_and_state() {
        let old = FlowValueV2 {
            last_seen_ns: 7,
            generation: 3,
            dev_a: 11,
            dev_b: 0,
            epoch_a: 2,
            epoch_b: 0,
            rule: 42,
            state: FLOW_ESTABLISHED,
            initiator: 1,
            reason: Reason::Audit as u8,
            _pad: 0,
        };
        let new = old.upgrade();
        assert_eq!(
            (new.last_seen_ns, new.generation, new.dev_a, new.dev_b),
            (7, 3, 11, 0)
        );
        assert_eq!((new.epoch_a, new.epoch_b, new.rule), (2, 0, 42));
        assert_eq!(
            (new.state, new.initiator, new.reason),
            (FLOW_ESTABLISHED, 1, 5)
        );
        assert_eq!(new.resp_isn, 0);
    }
}
