//! What the operator sees of a scene's phones: connected, located, synced, and a histogram of
//! their clock-sync errors. Counted from a node's hub; nodes add up each other's reports.

use serde::Serialize;
use utoipa::ToSchema;

use super::hub::SceneHub;

/// A phone counts as synced when its clock is known to within this.
pub const SYNCED_ERROR_MS: f64 = 10.0;
/// Upper bounds of the histogram's buckets, in ms (one more, unbounded, follows).
const HISTOGRAM_BOUNDS_MS: [f64; 7] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0];

/// Counts the operator sees. Error buckets are upper bounds in ms (`inf` last).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Presence {
    /// Nodes whose phones are counted (every node with phones of the scene).
    pub nodes: usize,
    pub connected: usize,
    pub located: usize,
    /// Phones whose last reported sync error is within `SYNCED_ERROR_MS`.
    pub synced: usize,
    pub sync_error_histogram: Vec<HistogramBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistogramBucket {
    /// Upper bound of the bucket in ms; none for the last, unbounded one.
    pub le_ms: Option<f64>,
    pub count: usize,
}

impl Presence {
    /// No phones on no node.
    pub fn empty() -> Presence {
        Presence {
            nodes: 0,
            connected: 0,
            located: 0,
            synced: 0,
            sync_error_histogram: HISTOGRAM_BOUNDS_MS
                .iter()
                .map(|&b| HistogramBucket {
                    le_ms: Some(b),
                    count: 0,
                })
                .chain([HistogramBucket {
                    le_ms: None,
                    count: 0,
                }])
                .collect(),
        }
    }

    /// The phones of a scene on this node.
    pub fn of(scene: &SceneHub) -> Presence {
        let mut p = Presence::empty();
        p.nodes = 1;
        scene.for_each_conn(|c| {
            p.connected += 1;
            p.located += usize::from(c.position().is_some());
            if let Some(err) = c.sync_error_ms() {
                p.synced += usize::from(err <= SYNCED_ERROR_MS);
                let i = HISTOGRAM_BOUNDS_MS
                    .iter()
                    .position(|&b| err <= b)
                    .unwrap_or(HISTOGRAM_BOUNDS_MS.len());
                p.sync_error_histogram[i].count += 1;
            }
        });
        p
    }

    /// Adds another node's counts to these.
    pub fn add(&mut self, other: &Presence) {
        self.nodes += other.nodes;
        self.connected += other.connected;
        self.located += other.located;
        self.synced += other.synced;
        for (mine, theirs) in self
            .sync_error_histogram
            .iter_mut()
            .zip(&other.sync_error_histogram)
        {
            mine.count += theirs.count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::hub::{Hub, SceneSnapshot};
    use uuid::Uuid;

    fn empty_snapshot() -> (SceneSnapshot, i64) {
        (SceneSnapshot::idle(10.0, 10.0, [0, 0, 0]), 0)
    }

    #[test]
    fn presence_counts_and_histogram() {
        let hub = Hub::default();
        let scene = hub.scene_or_insert(Uuid::new_v4(), empty_snapshot);
        let (a, _ra) = hub.connect(&scene, Uuid::new_v4(), Some((1.0, 1.0)), 4);
        let (b, _rb) = hub.connect(&scene, Uuid::new_v4(), None, 4);
        a.report_sync(0.8);
        b.report_sync(35.0);
        let p = Presence::of(&scene);
        assert_eq!((p.connected, p.located, p.synced), (2, 1, 1));
        assert_eq!(p.sync_error_histogram[0].count, 1);
        assert_eq!(p.sync_error_histogram[5].count, 1);
        let mut total = p.clone();
        total.add(&p);
        assert_eq!((total.nodes, total.connected), (2, 4));
    }
}
