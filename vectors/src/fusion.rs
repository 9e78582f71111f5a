//! Reciprocal rank fusion of several ranked result lists.

use std::collections::HashMap;

use uuid::Uuid;

use crate::Hit;

/// The usual RRF constant: damps the influence of the very first ranks.
pub const RRF_K: f32 = 60.0;

/// Fuses ranked lists into one: a point's score is the sum over the lists
/// it appears in of `1 / (k + rank)` (rank from 1). Points are keyed by id;
/// the payload of a point's first appearance is kept. Ties keep the order
/// of first appearance (earlier lists, better ranks first), so the result
/// is deterministic. At most `limit` hits are returned, best first.
pub fn rrf(lists: &[Vec<Hit>], k: f32, limit: usize) -> Vec<Hit> {
    let mut order: Vec<Uuid> = Vec::new();
    let mut fused: HashMap<Uuid, Hit> = HashMap::new();
    for list in lists {
        for (rank, hit) in list.iter().enumerate() {
            let contribution = 1.0 / (k + rank as f32 + 1.0);
            match fused.get_mut(&hit.id) {
                Some(existing) => existing.score += contribution,
                None => {
                    order.push(hit.id);
                    fused.insert(
                        hit.id,
                        Hit {
                            score: contribution,
                            ..hit.clone()
                        },
                    );
                }
            }
        }
    }
    let mut hits: Vec<Hit> = order
        .into_iter()
        .filter_map(|id| fused.remove(&id))
        .collect();
    // A stable sort: equal scores stay in order of first appearance.
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(limit);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PointPayload;

    fn hit(n: u128) -> Hit {
        Hit {
            id: Uuid::from_u128(n),
            score: 100.0 - n as f32,
            payload: PointPayload {
                tenant_id: "t".into(),
                agent_id: None,
                document_id: format!("doc{n}"),
                document_name: format!("doc{n}.txt"),
                chunk_index: 0,
                page: None,
                sheet: None,
                text: format!("text {n}"),
            },
        }
    }

    fn ids(hits: &[Hit]) -> Vec<u128> {
        hits.iter().map(|h| h.id.as_u128()).collect()
    }

    #[test]
    fn single_list_keeps_its_order_with_rrf_scores() {
        let fused = rrf(&[vec![hit(1), hit(2), hit(3)]], RRF_K, 10);
        assert_eq!(ids(&fused), vec![1, 2, 3]);
        assert!((fused[0].score - 1.0 / 61.0).abs() < 1e-6);
        assert!((fused[2].score - 1.0 / 63.0).abs() < 1e-6);
        assert_eq!(fused[1].payload.document_id, "doc2");
    }

    #[test]
    fn points_in_both_lists_rise_to_the_top() {
        let sparse = vec![hit(1), hit(2), hit(3)];
        let dense = vec![hit(4), hit(3), hit(5)];
        let fused = rrf(&[sparse, dense], RRF_K, 10);
        assert_eq!(fused[0].id.as_u128(), 3);
        assert!((fused[0].score - (1.0 / 63.0 + 1.0 / 62.0)).abs() < 1e-6);
        // No duplicates: 5 distinct points.
        assert_eq!(fused.len(), 5);
        // Equal scores (rank 1 in one list each) keep first-appearance order.
        assert_eq!(ids(&fused[1..3]), vec![1, 4]);
    }

    #[test]
    fn limit_and_empty_input() {
        assert!(rrf(&[], RRF_K, 10).is_empty());
        assert!(rrf(&[vec![], vec![]], RRF_K, 10).is_empty());
        let fused = rrf(&[vec![hit(1), hit(2), hit(3)], vec![hit(3)]], RRF_K, 2);
        assert_eq!(ids(&fused), vec![3, 1]);
        assert!(rrf(&[vec![hit(1)]], RRF_K, 0).is_empty());
    }
}
