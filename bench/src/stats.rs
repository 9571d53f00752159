//! Medians, ranges and percentiles of repeated measurements.

/// One figure measured several times.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub samples: Vec<f64>,
}

impl Figure {
    pub fn new(samples: Vec<f64>) -> Self {
        Self { samples }
    }

    pub fn median(&self) -> f64 {
        percentile(&self.samples, 50.0)
    }

    pub fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// The `p`th percentile (nearest rank on the sorted samples); NaN when
/// there are none.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
        assert!(percentile(&[], 50.0).is_nan());
        let f = Figure::new(vec![3.0, 1.0, 2.0]);
        assert_eq!((f.median(), f.min(), f.max()), (2.0, 1.0, 3.0));
    }
}
