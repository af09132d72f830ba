//! Prometheus metrics of the controller and the datapath, and the `/metrics` endpoint.
//!
//! Bookkeeping only: the daemon reads the maps and reports reloads, quarantines and attach
//! state through [`Metrics`]; nothing here touches the kernel. Every family is named
//! `lazaret_*` and documented in `docs/metrics.md`. No label names a device or an address
//! (unbounded cardinality): per-device detail is the control API's. Labels from a closed set
//! (reload failure reasons, modes, actions, kinds) record a value outside it as `other`.

mod datapath;
mod devices;
pub mod health;
mod labels;
mod register;
mod reload;
mod server;
#[cfg(test)]
mod tests;

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use prometheus::{Registry, TextEncoder};

pub use datapath::DatapathSnapshot;
pub use labels::ReloadFailure;
pub use server::{serve, CONTENT_TYPE};

/// Registering the metric families failed: a name, label or bucket list is invalid or
/// registered twice (a bug, caught by this module's tests).
#[derive(Debug, thiserror::Error)]
#[error("cannot register the metric families: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Every metric family lazaret exports, in one registry.
pub struct Metrics {
    registry: Registry,
    datapath: datapath::DatapathFamilies,
    reload: reload::ReloadFamilies,
    devices: devices::DeviceFamilies,
    health: health::HealthFamilies,
    /// Held while a family's series are replaced (policy info, interface mode) and while
    /// rendering, so a scrape never sees the old and the new series together, or neither.
    series: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

// === impl Metrics ===

impl Metrics {
    /// Registers every family, `lazaret_build_info{version, abi_version}` set to 1.
    pub fn new(version: &str) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let build_info = register::gauge_vec(
            &registry,
            "lazaret_build_info",
            "Version of the running lazaret and of its datapath ABI; always 1.",
            &["version", "abi_version"],
        )?;
        build_info
            .with_label_values(&[version, lazaret_abi::ABI_VERSION.to_string().as_str()])
            .set(1);
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds …: a
        // leak or a spinning loop shows before it becomes an outage.
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            datapath: datapath::DatapathFamilies::register(&registry)?,
            reload: reload::ReloadFamilies::register(&registry)?,
            devices: devices::DeviceFamilies::register(&registry)?,
            health: health::HealthFamilies::register(&registry)?,
            registry,
            series: Mutex::new(()),
        })
    }

    /// Absolute datapath readings; counters advance by the difference with the last call. A
    /// reading lower than the last one means the maps were recreated (an upgrade): then every
    /// counter advances by its reading. Per-class sums that fall while the maps were not
    /// recreated (a device left the class) hold still rather than count the class again.
    pub fn observe_datapath(&self, snap: &DatapathSnapshot) {
        self.datapath.observe(snap);
    }

    /// A reload started (file change, SIGHUP or startup).
    pub fn reload_attempted(&self) {
        self.reload.attempted();
    }

    /// A reload failed, for `reason`.
    pub fn reload_failed(&self, duration: Duration, reason: ReloadFailure) {
        self.reload.failed(duration, reason);
    }

    /// A reload succeeded: `generation` (from `commit`, if the policy directory is a git
    /// checkout) is enforcing since `unix_time_s`.
    pub fn reload_succeeded(
        &self,
        duration: Duration,
        generation: u64,
        commit: Option<&str>,
        unix_time_s: f64,
    ) {
        let _series = self.lock_series();
        self.reload
            .succeeded(duration, generation, commit, unix_time_s);
    }

    /// Which gateway of which site this is, and which of its members (`lazaret_gateway_info`):
    /// replaced, so a renamed site or gateway leaves no stale series.
    pub fn set_gateway(&self, site: &str, gateway: &str, member: &str) {
        let _series = self.lock_series();
        self.reload.set_gateway(site, gateway, member);
    }

    /// This host's role in an active/standby pair (`lazaret_ha_role`): replaced, so one
    /// series says it.
    pub fn set_ha_role(&self, role: &str) {
        let _series = self.lock_series();
        self.reload.set_ha_role(role);
    }

    /// An automatic quarantine decided while standby, not carried out.
    pub fn standby_decision(&self) {
        self.reload.standby_decision();
    }

    /// A generation enforces `open` service windows, `opened` and `closed` of them anew.
    pub fn exceptions(&self, open: usize, opened: usize, closed: usize) {
        self.reload.exceptions(open, opened, closed);
    }

    /// `n` service windows are past their end and still open in the enforcing generation.
    pub fn exceptions_overdue(&self, n: usize) {
        self.reload.exceptions_overdue(n);
    }

    /// Whether the pair's quarantine replication is connected to the other member.
    pub fn set_ha_sync_up(&self, up: bool) {
        self.reload.set_ha_sync_up(up);
    }

    /// A connection or message of the replication refused, for `reason`.
    pub fn ha_sync_refused(&self, reason: &str) {
        self.reload.ha_sync_refused(reason);
    }

    /// `n` flows of the flow replication with `outcome`.
    pub fn ha_flow_updates(&self, outcome: &str, n: u64) {
        self.reload.ha_flow_updates(outcome, n);
    }

    /// How `interface` is attached now; `mode` is `native`, `skb` or `nftables`. Replaces the
    /// interface's series in any other mode.
    /// The registry, for families registered outside this module (the nftables dataplane's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn set_interface(&self, interface: &str, mode: &str, attached: bool) {
        let _series = self.lock_series();
        self.devices.set_interface(interface, mode, attached);
    }

    /// `interface` is no longer configured: its series disappear.
    pub fn remove_interface(&self, interface: &str) {
        let _series = self.lock_series();
        self.devices.remove_interface(interface);
    }

    /// Devices in quarantine now, by action (`alert`, `restrict`, `isolate`). Actions left
    /// out have none.
    pub fn set_quarantined(&self, by_action: &[(&str, u64)]) {
        self.devices.set_quarantined(by_action);
    }

    /// A device was put in quarantine with `action`.
    pub fn quarantine_event(&self, action: &str) {
        self.devices.quarantine_event(action);
    }

    /// A deviation of `kind`: `deny`, `spoof`, `rogue_dhcp`, `rogue_ra` or `unknown`.
    pub fn deviation(&self, kind: &str) {
        self.devices.deviation(kind);
    }

    /// Managed devices in the enforcing policy, by mode.
    pub fn set_devices_by_mode(&self, enforce: u64, audit: u64, learn: u64) {
        self.devices.set_devices_by_mode(enforce, audit, learn);
    }

    /// Unknown devices tracked now.
    pub fn set_unknown_devices(&self, n: u64) {
        self.devices.set_unknown_devices(n);
    }

    /// An unknown device was seen for the first time.
    pub fn unknown_device_discovered(&self) {
        self.devices.unknown_device_discovered();
    }

    /// One webhook event's fate: `delivered`, `failed` (every retry failed) or `dropped`
    /// (the queue was full).
    pub fn webhook_delivery(&self, result: &str) {
        self.devices.webhook_delivery(result);
    }

    /// `n` events of the feed for the syslog collector ended `sent`, `failed` or `dropped`.
    pub fn syslog_messages(&self, result: &str, n: u64) {
        self.devices.syslog_messages(result, n);
    }

    /// The event loop ran its tick at `unix_ms`.
    pub fn heartbeat(&self, unix_ms: u64) {
        self.health.heartbeat(unix_ms);
    }

    /// Unix milliseconds of the loop's last tick (0: none yet), for `/healthz`.
    pub fn heartbeat_ms(&self) -> u64 {
        self.health.heartbeat_ms()
    }

    /// The datapath's counters were read at `unix_s`.
    pub fn counters_read(&self, unix_s: f64) {
        self.health.counters_read(unix_s);
    }

    /// A write of the state directory (`state`: one of [`health::PERSISTED`]) succeeded or
    /// failed.
    pub fn persist(&self, state: &str, ok: bool, all_ok: bool) {
        self.health.persist(state, ok, all_ok);
    }

    /// Whether the enforcing generation is the last-known-good policy (see `daemon::lkg`).
    pub fn last_known_good(&self, on: bool) {
        self.health.last_known_good(on);
    }

    /// `n` interfaces are held closed (see `nft::hold`).
    pub fn held(&self, n: usize) {
        self.health.held(n);
    }

    /// Enforcement on `interface` was changed behind lazaret's back (`kind`: what was found
    /// and done).
    pub fn tamper(&self, interface: &str, kind: &str) {
        self.health.tamper(interface, kind);
    }

    /// Every family in the Prometheus text exposition format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let families = {
            let _series = self.lock_series();
            self.registry.gather()
        };
        let mut text = String::new();
        if let Err(error) = TextEncoder::new().encode_utf8(&families, &mut text) {
            // Only a family without samples or a malformed histogram fails here; serve what
            // was encoded rather than nothing.
            tracing::error!(%error, "cannot encode every metric family");
        }
        text
    }

    fn lock_series(&self) -> MutexGuard<'_, ()> {
        // Guards no data, only ordering: a poisoned lock is as good as a clean one.
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
