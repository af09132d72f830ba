//! Creating a metric family and registering it in one step. The names and help texts are
//! static; a failure here is a bug that `tests::every_family_follows_the_conventions` catches.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

pub(crate) type Result<T> = std::result::Result<T, prometheus::Error>;

pub(crate) fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter> {
    let metric = IntCounter::with_opts(Opts::new(name, help))?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

pub(crate) fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

pub(crate) fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge> {
    let metric = IntGauge::with_opts(Opts::new(name, help))?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// A floating-point gauge, for timestamps.
pub(crate) fn float_gauge(registry: &Registry, name: &str, help: &str) -> Result<Gauge> {
    let metric = Gauge::with_opts(Opts::new(name, help))?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

pub(crate) fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec> {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

pub(crate) fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> Result<Histogram> {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// A reading for an `IntGauge` (i64); readings never come near `i64::MAX`, saturate if one did.
pub(crate) fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
