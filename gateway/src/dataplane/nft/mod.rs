//! The nftables dataplane: the compiled policy rendered into one nftables table of
//! lazaret's own, applied atomically with `nft -j -f -` (the daemon builds each generation
//! unhooked beside the enforcing one and swaps them in one transaction: [`Nft::swap`]).
//!
//! Where XDP cannot run (drivers, tunnels) or a network team wants to read the enforced
//! policy with `nft list ruleset`, the same [`crate::policy::MapContents`] the XDP maps are
//! filled from becomes sets and maps; the rules are a fixed skeleton that mirrors
//! [`crate::policy::classify()`]:
//!
//! - `prerouting` (priority -150, after conntrack) jumps by ingress interface to
//!   `from_devices` or `from_upstream`; other interfaces are not lazaret's.
//! - `id4`/`id6`: the source binding (address, MAC, interface) of a managed device; a
//!   managed address or MAC used elsewhere is spoofing; anything else is an unknown device.
//! - `flow`: conntrack replaces the XDP flow table; a flow admitted under the table's
//!   generation (stamped in the conntrack mark) passes unless one end is quarantined;
//!   every other packet is judged by its flow's original tuple, so a new table generation
//!   or a quarantine re-judges live flows as the XDP generation/epoch switch does.
//! - `judge*` → `end_*` → `class_*` → `ports_*`: the two-stage lookup (peer class, then
//!   protocol and port), with the packet mark as the scratch register holding the device
//!   index, then its policy, then the peer class. Lazaret owns the packet mark during
//!   prerouting and the conntrack mark of the flows it judges.
//!
//! Denials, audit and learn records are logged to nflog group [`nflog::GROUP`], rate-limited
//! per source MAC (the dynamic sets [`render::EVENT_METER`] for devices' MACs and
//! [`render::EVENT_METER_UNKNOWN`] for any other, which then spends from the shared
//! [`render::UNKNOWN_BUDGET`]: see `Builder::log`); [`nflog`] turns them into the
//! XDP program's events for the daemon. Devices behind a Linux bridge reach the inet table
//! through br_netfilter and are bound to the bridge ([`dataplane`]). The named counters (per
//! reason and side, [`render::counter_name`]) of each new generation start at the totals of
//! the table it replaces, so they run on like XDP's pinned counters.
//!
//! What the inet family cannot see — ARP, VLAN tags, the bridge port a frame came in on,
//! fragments before reassembly, NDP targets — is judged before it by the frame stage
//! ([`frame`]): a `netdev` table at the ingress of every interface, where the XDP program
//! runs, swapped together with the inet table. What remains different from the XDP program
//! is which reason a frame is counted under in a few cases, never whether it passes:
//! conntrack reassembles fragments (and discards overlapping or oversize trains itself,
//! uncounted by lazaret), an ICMP error whose destination is not the quoted packet's sender
//! is conntrack's `invalid` ("no flow" here, `deny_icmp_error` on XDP), and conntrack's
//! `invalid` state (for example an ICMP echo reply without a request) counts as "no flow".
//! Conntrack relates more to a flow than the XDP program does (ICMP redirects, source
//! quenches and every ICMPv6 type below 128, and errors reassembled from fragments): the
//! flow chain and the frame stage refuse those as packets of no flow, as XDP does.

pub mod apply;
pub mod dataplane;
mod expr;
pub mod frame;
pub mod hold;
pub mod nflog;
mod ranges;
pub mod render;

#[cfg(test)]
mod tests;

pub use apply::{ApplyError, KernelDevice, Nft};
pub use dataplane::{NftDataplane, NftError, Tampered};
pub use render::{render, Family, RenderError, RenderOptions, Rendered};
