//! Latency histogram in milliseconds, as Envoy records `upstream_rq_time`.
//!
//! Owns: an hdrhistogram (2 significant digits, auto-resizing so an idle cluster costs a
//! few hundred bytes) for the quantiles of `/stats`, next to exact counts for Envoy's
//! default Prometheus buckets, the sum and the count, and their merge.
//! Must not: be shared between shards: each shard records into its own and the scrape
//! merges clones.

use std::time::Duration;

/// Envoy's default histogram bucket bounds (ms), the `le` labels of `/stats/prometheus`.
pub const ENVOY_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The quantiles Envoy prints on `/stats`, with their labels.
pub const ENVOY_QUANTILES: [(f64, &str); 10] = [
    (0.0, "P0"),
    (0.25, "P25"),
    (0.5, "P50"),
    (0.75, "P75"),
    (0.9, "P90"),
    (0.95, "P95"),
    (0.99, "P99"),
    (0.995, "P99.5"),
    (0.999, "P99.9"),
    (1.0, "P100"),
];

#[derive(Clone, Debug)]
pub struct Histogram {
    hdr: hdrhistogram::Histogram<u64>,
    /// Non-cumulative counts per `ENVOY_BUCKETS` bound; values above the last one are
    /// only in `count` (the `+Inf` bucket).
    buckets: [u64; ENVOY_BUCKETS.len()],
    count: u64,
    sum_ms: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            // 2 significant digits: exact up to 256 ms, within 1% above; auto-resizing.
            hdr: hdrhistogram::Histogram::new(2).expect("2 significant digits is valid"),
            buckets: [0; ENVOY_BUCKETS.len()],
            count: 0,
            sum_ms: 0,
        }
    }

    /// Records a duration in whole milliseconds (truncated, as Envoy does).
    pub fn record(&mut self, d: Duration) {
        self.record_ms(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }

    pub fn record_ms(&mut self, ms: u64) {
        // `record` grows the auto-resizing histogram; `saturating_record` would clamp to
        // the current (small) range instead. It fails only beyond u64 range limits.
        if self.hdr.record(ms).is_err() {
            self.hdr.saturating_record(ms);
        }
        // Bounds are increasing: the first bound not below the value is its bucket.
        if let Some(i) = ENVOY_BUCKETS.iter().position(|le| ms as f64 <= *le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    /// Adds `other`'s samples into `self` (the scrape-time merge of shards).
    pub fn add(&mut self, other: &Histogram) {
        if let Err(e) = self.hdr.add(&other.hdr) {
            // Only possible when a value exceeds u64 ranges; the exact fields still merge.
            tracing::warn!(error = ?e, "histogram merge lost quantile samples");
        }
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ms = self.sum_ms.saturating_add(other.sum_ms);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
    }

    /// The value at quantile `q` (0..=1), in ms; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        self.hdr.value_at_quantile(q)
    }

    /// `(le, cumulative count)` for each of `ENVOY_BUCKETS`; `+Inf` is `count()`.
    pub fn cumulative_buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        ENVOY_BUCKETS
            .iter()
            .zip(self.buckets.iter())
            .scan(0u64, |acc, (le, n)| {
                *acc += n;
                Some((*le, *acc))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_merge_adds_everything() {
        let mut a = Histogram::new();
        a.record_ms(0);
        a.record(Duration::from_micros(1_900)); // 1 ms
        a.record_ms(7);
        let mut b = Histogram::new();
        b.record_ms(4_000_000); // above the last bound: +Inf only
        b.record_ms(250);
        a.add(&b);
        let cum: Vec<(f64, u64)> = a.cumulative_buckets().collect();
        assert_eq!(cum[0], (0.5, 1));
        assert_eq!(cum[1], (1.0, 2));
        assert_eq!(cum[2], (5.0, 2));
        assert_eq!(cum[3], (10.0, 3));
        assert_eq!(cum[7], (250.0, 4));
        assert_eq!(cum[18], (3600000.0, 4));
        assert_eq!(a.count(), 5);
        assert_eq!(a.sum_ms(), 4_000_258);
        assert_eq!(a.quantile(0.0), 0);
        assert_eq!(a.quantile(0.5), 7);
        assert!(a.quantile(1.0) >= 3_990_000);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
