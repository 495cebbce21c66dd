//! `/metrics` read the way Prometheus reads it: fetched, checked to be the
//! text exposition format, and parsed by a real parser of that format
//! (`openmetrics-parser`), so tests look samples up by name and labels
//! rather than by matching lines.

use openmetrics_parser::{
    HistogramValue, MetricsExposition, PrometheusType, PrometheusValue, Sample,
};

use crate::common::TestServer;

/// One parsed scrape of `/metrics`, with its text for failure messages.
pub struct Scrape {
    pub text: String,
    parsed: MetricsExposition<PrometheusType, PrometheusValue>,
}

impl Scrape {
    /// Fetches and parses the server's `/metrics`, asserting a 200 in the
    /// Prometheus text format (version 0.0.4).
    pub async fn of(server: &TestServer) -> Scrape {
        let res = server
            .http
            .get(server.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(res.status().as_u16(), 200, "GET /metrics");
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "metrics content type: {content_type}"
        );
        let text = res.text().await.expect("read /metrics");
        Scrape::parse(text)
    }

    /// Parses an exposition text, failing the test if it is not valid.
    pub fn parse(text: String) -> Scrape {
        let parsed = openmetrics_parser::prometheus::parse_prometheus(&text)
            .unwrap_or_else(|e| panic!("/metrics does not parse: {e:?}\n{text}"));
        Scrape { text, parsed }
    }

    /// The type of the family `name` (`None` if absent).
    pub fn type_of(&self, name: &str) -> Option<PrometheusType> {
        self.parsed
            .families
            .get(name)
            .map(|f| f.family_type.clone())
    }

    /// The samples of the family `name` whose labels include all of
    /// `labels` (none if the family is absent).
    pub fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample<PrometheusValue>> {
        let Some(family) = self.parsed.families.get(name) else {
            return Vec::new();
        };
        family
            .iter_samples()
            .filter(|s| {
                let set = s.get_labelset().expect("a sample of a family has labels");
                labels
                    .iter()
                    .all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
            .collect()
    }

    /// The value of the one counter or gauge sample of `name` with these
    /// labels (among others); `None` if there is none. Fails the test if
    /// several match, or the family is a histogram.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let samples = self.samples(name, labels);
        assert!(
            samples.len() <= 1,
            "{} samples of {name} match {labels:?}:\n{}",
            samples.len(),
            self.text
        );
        samples.first().map(|s| number(name, &s.value))
    }

    /// Like [`Scrape::value`], failing the test if the sample is absent.
    #[track_caller]
    pub fn value_of(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in /metrics:\n{}", self.text))
    }

    /// The sum of the counter or gauge samples of `name` whose labels
    /// include `labels` (0 if none).
    pub fn total(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels)
            .iter()
            .map(|s| number(name, &s.value))
            .sum()
    }

    /// The one histogram of `name` with these labels (among others).
    #[track_caller]
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> &HistogramValue {
        let samples = self.samples(name, labels);
        assert_eq!(
            samples.len(),
            1,
            "histograms of {name} matching {labels:?}:\n{}",
            self.text
        );
        match &samples[0].value {
            PrometheusValue::Histogram(h) => h,
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    /// The observation count of the one histogram of `name` with these labels.
    #[track_caller]
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let h = self.histogram(name, labels);
        h.count
            .unwrap_or_else(|| panic!("{name} {labels:?} has no _count:\n{}", self.text))
    }
}

/// A counter's or gauge's value.
fn number(name: &str, value: &PrometheusValue) -> f64 {
    match value {
        PrometheusValue::Counter(c) => c.value.as_f64(),
        PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
        other => panic!("{name} is not a counter or gauge: {other:?}"),
    }
}

/// Checks a histogram's shape: buckets cumulative and ending in `+Inf`,
/// which holds every observation.
#[track_caller]
pub fn assert_well_formed(name: &str, h: &HistogramValue) {
    let counts: Vec<f64> = h.buckets.iter().map(|b| b.count.as_f64()).collect();
    assert!(counts.len() > 2, "{name}: {h:?}");
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "{name}: buckets are cumulative: {counts:?}"
    );
    let last = h.buckets.last().expect("buckets");
    assert!(last.upper_bound.is_infinite(), "{name}: ends in +Inf");
    assert_eq!(
        Some(last.count.as_f64() as u64),
        h.count,
        "{name}: +Inf holds every observation"
    );
}
