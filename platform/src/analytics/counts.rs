//! The additive numbers of one bucket (an hour or a local day of one
//! tenant × agent × channel). Only sums and counts are stored, never
//! averages, so any period is the sum of its buckets; percentiles come from
//! a histogram with fixed edges.

use serde::{Deserialize, Serialize};

use super::facts::{Fact, FactKind};

/// Upper edges (exclusive, in milliseconds) of the response-time histogram;
/// the last bucket holds everything from one day on.
pub const RESPONSE_EDGES_MS: [i64; 24] = [
    500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 45_000, 60_000, 90_000,
    120_000, 180_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000,
    28_800_000, 86_400_000,
];

/// Buckets of the response-time histogram.
pub const HISTOGRAM_LEN: usize = RESPONSE_EDGES_MS.len() + 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Counts {
    pub conversations_started: i64,
    pub customer_messages: i64,
    pub bot_messages: i64,
    pub staff_messages: i64,
    pub responses: i64,
    pub response_ms: i64,
    pub bot_responses: i64,
    pub bot_response_ms: i64,
    pub staff_responses: i64,
    pub staff_response_ms: i64,
    pub first_responses: i64,
    pub first_response_ms: i64,
    pub handoffs: i64,
    /// Conversations that reached `RESOLVED` or `CLOSED` from an open state.
    pub resolved: i64,
    pub resolved_by_bot: i64,
    /// Sum of the durations (creation to resolution) of the resolved ones.
    pub resolution_ms: i64,
    pub delivery_failures: i64,
    pub tokens: i64,
    pub ratings: i64,
    pub rating_sum: i64,
    /// Response times per bucket of [`RESPONSE_EDGES_MS`].
    pub response_histogram: Vec<i64>,
}

fn histogram_slot(ms: i64) -> usize {
    RESPONSE_EDGES_MS
        .iter()
        .position(|edge| ms < *edge)
        .unwrap_or(RESPONSE_EDGES_MS.len())
}

impl Counts {
    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
            || (self.response_histogram.iter().all(|c| *c == 0)
                && Counts {
                    response_histogram: Vec::new(),
                    ..self.clone()
                } == Counts::default())
    }

    /// Adds one fact.
    pub fn add_fact(&mut self, fact: &Fact) {
        match fact.kind {
            FactKind::CustomerMessage => {
                self.customer_messages += 1;
                if fact.started {
                    self.conversations_started += 1;
                }
            }
            FactKind::BotMessage | FactKind::StaffMessage => {
                let bot = fact.kind == FactKind::BotMessage;
                if bot {
                    self.bot_messages += 1;
                } else {
                    self.staff_messages += 1;
                }
                self.tokens += fact.tokens;
                if let Some(ms) = fact.response_ms {
                    let ms = ms.max(0);
                    self.responses += 1;
                    self.response_ms += ms;
                    if bot {
                        self.bot_responses += 1;
                        self.bot_response_ms += ms;
                    } else {
                        self.staff_responses += 1;
                        self.staff_response_ms += ms;
                    }
                    if fact.first_response {
                        self.first_responses += 1;
                        self.first_response_ms += ms;
                    }
                    if self.response_histogram.len() < HISTOGRAM_LEN {
                        self.response_histogram.resize(HISTOGRAM_LEN, 0);
                    }
                    self.response_histogram[histogram_slot(ms)] += 1;
                }
            }
            FactKind::Handoff => self.handoffs += 1,
            FactKind::Resolved => {
                self.resolved += 1;
                if fact.by_bot {
                    self.resolved_by_bot += 1;
                }
                self.resolution_ms += fact.duration_ms.unwrap_or(0).max(0);
            }
            FactKind::DeliveryFailed => self.delivery_failures += 1,
            FactKind::Rating => {
                if let Some(r) = fact.rating {
                    self.ratings += 1;
                    self.rating_sum += i64::from(r);
                }
            }
        }
    }

    /// Adds another bucket.
    pub fn add(&mut self, o: &Counts) {
        self.conversations_started += o.conversations_started;
        self.customer_messages += o.customer_messages;
        self.bot_messages += o.bot_messages;
        self.staff_messages += o.staff_messages;
        self.responses += o.responses;
        self.response_ms += o.response_ms;
        self.bot_responses += o.bot_responses;
        self.bot_response_ms += o.bot_response_ms;
        self.staff_responses += o.staff_responses;
        self.staff_response_ms += o.staff_response_ms;
        self.first_responses += o.first_responses;
        self.first_response_ms += o.first_response_ms;
        self.handoffs += o.handoffs;
        self.resolved += o.resolved;
        self.resolved_by_bot += o.resolved_by_bot;
        self.resolution_ms += o.resolution_ms;
        self.delivery_failures += o.delivery_failures;
        self.tokens += o.tokens;
        self.ratings += o.ratings;
        self.rating_sum += o.rating_sum;
        if !o.response_histogram.is_empty() {
            if self.response_histogram.len() < HISTOGRAM_LEN {
                self.response_histogram.resize(HISTOGRAM_LEN, 0);
            }
            for (a, b) in self
                .response_histogram
                .iter_mut()
                .zip(o.response_histogram.iter())
            {
                *a += *b;
            }
        }
    }

    /// Customer messages received plus bot and staff messages sent.
    pub fn messages(&self) -> i64 {
        self.customer_messages + self.bot_messages + self.staff_messages
    }

    pub fn outbound(&self) -> i64 {
        self.bot_messages + self.staff_messages
    }

    fn mean_seconds(sum_ms: i64, n: i64) -> f64 {
        if n == 0 {
            0.0
        } else {
            round2(sum_ms as f64 / n as f64 / 1000.0)
        }
    }

    pub fn average_response_seconds(&self) -> f64 {
        Self::mean_seconds(self.response_ms, self.responses)
    }
    pub fn bot_average_response_seconds(&self) -> f64 {
        Self::mean_seconds(self.bot_response_ms, self.bot_responses)
    }
    pub fn staff_average_response_seconds(&self) -> f64 {
        Self::mean_seconds(self.staff_response_ms, self.staff_responses)
    }
    pub fn first_response_seconds(&self) -> f64 {
        Self::mean_seconds(self.first_response_ms, self.first_responses)
    }
    pub fn average_resolution_seconds(&self) -> f64 {
        Self::mean_seconds(self.resolution_ms, self.resolved)
    }

    /// Mean rating 1–5, 0 when there is none.
    pub fn satisfaction(&self) -> f64 {
        if self.ratings == 0 {
            0.0
        } else {
            round2(self.rating_sum as f64 / self.ratings as f64)
        }
    }

    /// Resolved by bot ÷ resolved or closed.
    pub fn bot_resolution_rate(&self) -> f64 {
        ratio(self.resolved_by_bot, self.resolved)
    }

    /// Handoffs ÷ conversations started.
    pub fn handoff_rate(&self) -> f64 {
        ratio(self.handoffs, self.conversations_started)
    }

    /// Failed ÷ outbound messages sent or failed.
    pub fn delivery_failure_rate(&self) -> f64 {
        ratio(self.delivery_failures, self.outbound())
    }

    /// The `q` quantile (0–1) of response times in seconds, interpolated
    /// linearly inside the histogram bucket it falls in.
    pub fn response_percentile_seconds(&self, q: f64) -> f64 {
        let total: i64 = self.response_histogram.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0i64;
        for (i, count) in self.response_histogram.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            if (seen + count) as f64 >= rank {
                let lo = if i == 0 { 0 } else { RESPONSE_EDGES_MS[i - 1] } as f64;
                let Some(hi) = RESPONSE_EDGES_MS.get(i).map(|e| *e as f64) else {
                    return round2(lo / 1000.0);
                };
                let within = ((rank - seen as f64) / *count as f64).clamp(0.0, 1.0);
                return round2((lo + (hi - lo) * within) / 1000.0);
            }
            seen += count;
        }
        round2(*RESPONSE_EDGES_MS.last().unwrap_or(&0) as f64 / 1000.0)
    }
}

/// `a ÷ b` rounded to 4 places, 0 when `b` is 0.
pub fn ratio(a: i64, b: i64) -> f64 {
    if b == 0 {
        0.0
    } else {
        (a as f64 / b as f64 * 10_000.0).round() / 10_000.0
    }
}

pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_inside_fixed_buckets() {
        let mut c = Counts {
            response_histogram: vec![0; HISTOGRAM_LEN],
            ..Counts::default()
        };
        // 10 responses between 1 s and 2 s.
        c.response_histogram[histogram_slot(1_500)] = 10;
        assert_eq!(c.response_percentile_seconds(0.5), 1.5);
        assert_eq!(c.response_percentile_seconds(0.9), 1.9);
        assert_eq!(Counts::default().response_percentile_seconds(0.9), 0.0);
    }

    #[test]
    fn buckets_add_up_and_empty_ones_are_empty() {
        let mut a = Counts {
            ratings: 1,
            rating_sum: 5,
            ..Counts::default()
        };
        let b = Counts {
            ratings: 1,
            rating_sum: 3,
            response_histogram: vec![0; HISTOGRAM_LEN],
            ..Counts::default()
        };
        a.add(&b);
        assert_eq!(a.satisfaction(), 4.0);
        assert!(Counts::default().is_empty());
        assert!(
            Counts {
                response_histogram: vec![0; HISTOGRAM_LEN],
                ..Counts::default()
            }
            .is_empty()
        );
        assert!(!a.is_empty());
    }
}
