//! Whether secantusd-rs serves a filter from an index when it runs it.
//!
//! Its `explain` answers as MongoDB's planner would, but its executor has a
//! router of its own (secantus-storage 0.5.3-beta.196, `try_index_id_keys`
//! and the routes after it), so a query that explains as an index scan can
//! still read the whole collection, or the whole tenant. The router serves
//! a filter from an index only when:
//! - it is `_id` alone (equality, `$in` or a range), or
//! - its fields are plain equalities that are exactly the leading fields of
//!   an index (any order), plus at most one `$in` or range field that is
//!   the index's next field, or
//! - it is one field with a bounding operator on an index that starts with
//!   it (`$ne`, `$nin`, `$not`, `$exists: true`, `$type`, `$mod` do not
//!   bound), or
//! - it is an `$and` whose parts do not merge into a plain filter: then its
//!   first part that is served by itself is used and the others are checked
//!   on what that part reads (`{$and: [{served}, {$and: [rest]}]}`), or
//! - it is an `$or` whose every branch is served (finds only: updates,
//!   deletes and the `count` command never route an `$or`).
//!
//! Otherwise the router bounds the read by the first field, in the filter's
//! order, that an index starts with. That is accepted here for `_id` and
//! fields with a unique index of their own (one document at most): on
//! `tenantId` it reads the whole tenant, so its cost grows with the data.

use bson::{Bson, Document};

/// Operators that bound an index read.
const BOUNDING: [&str; 6] = ["$eq", "$gt", "$gte", "$lt", "$lte", "$in"];

/// An index as the router sees it.
#[derive(Clone, Debug)]
pub struct Index {
    pub keys: Document,
    pub unique: bool,
}

/// `Ok` when the router serves `filter` from one of `indexes`, else why
/// not. `or_routes`: whether the command routes `$or` (finds, aggregates
/// and the find of a findAndModify do).
pub fn served(filter: &Document, indexes: &[Index], or_routes: bool) -> Result<(), String> {
    let unique: Vec<&str> = indexes
        .iter()
        .filter(|i| i.unique && i.keys.len() == 1)
        .filter_map(|i| i.keys.keys().next().map(String::as_str))
        .collect();
    let indexes: Vec<Document> = indexes.iter().map(|i| i.keys.clone()).collect();
    let indexes = indexes.as_slice();
    if whole(filter, indexes, or_routes) {
        return Ok(());
    }
    let plain = !filter.keys().any(|k| k.starts_with('$'));
    if plain
        && let Some((field, _)) = filter
            .iter()
            .find(|(field, value)| one_field(field, value, indexes))
        && (field == "_id" || unique.contains(&field.as_str()))
    {
        return Ok(());
    }
    Err(format!("not served by an index on secantusd-rs: {filter}"))
}

fn whole(filter: &Document, indexes: &[Document], or_routes: bool) -> bool {
    if filter.is_empty() {
        return false;
    }
    if let Some(parts) = only(filter, "$and") {
        let parts: Vec<&Document> = parts.iter().filter_map(Bson::as_document).collect();
        if parts.iter().all(|p| !p.keys().any(|k| k.starts_with('$'))) {
            let mut merged = Document::new();
            for part in &parts {
                for (k, v) in part.iter() {
                    if merged.contains_key(k) {
                        return false;
                    }
                    merged.insert(k.clone(), v.clone());
                }
            }
            return whole(&merged, indexes, or_routes);
        }
        return parts.iter().any(|p| whole(p, indexes, or_routes));
    }
    if let Some(branches) = only(filter, "$or") {
        return or_routes
            && !branches.is_empty()
            && branches.iter().all(|b| {
                b.as_document()
                    .is_some_and(|b| whole(b, indexes, or_routes))
            });
    }
    if filter.keys().any(|k| k.starts_with('$')) {
        return false;
    }
    if filter.len() == 1 {
        let (field, value) = filter.iter().next().expect("one field");
        return one_field(field, value, indexes);
    }
    type Fields<'a> = Vec<(&'a String, &'a Bson)>;
    let (equal, ops): (Fields<'_>, Fields<'_>) = filter.iter().partition(|(_, v)| is_equality(v));
    let equal: Vec<&str> = equal.iter().map(|(k, _)| k.as_str()).collect();
    match ops.as_slice() {
        [] => indexes.iter().any(|index| {
            let keys: Vec<&str> = index.keys().map(String::as_str).collect();
            keys.len() >= equal.len() && same_set(&keys[..equal.len()], &equal)
        }),
        [(field, value)] => {
            bounded_only(value)
                && indexes.iter().any(|index| {
                    let keys: Vec<&str> = index.keys().map(String::as_str).collect();
                    keys.len() > equal.len()
                        && same_set(&keys[..equal.len()], &equal)
                        && keys[equal.len()] == field.as_str()
                })
        }
        _ => false,
    }
}

fn only<'a>(filter: &'a Document, key: &str) -> Option<&'a Vec<Bson>> {
    (filter.len() == 1)
        .then(|| filter.get_array(key).ok())
        .flatten()
}

fn one_field(field: &str, value: &Bson, indexes: &[Document]) -> bool {
    let bounds = is_equality(value) || bounds_something(value);
    bounds
        && (field == "_id"
            || indexes
                .iter()
                .any(|index| index.keys().next().is_some_and(|k| k == field)))
}

fn is_equality(value: &Bson) -> bool {
    match value {
        Bson::Document(d) => {
            d.keys().next().is_none_or(|k| !k.starts_with('$'))
                || (d.len() == 1 && d.contains_key("$eq"))
        }
        _ => true,
    }
}

fn bounded_only(value: &Bson) -> bool {
    value
        .as_document()
        .is_some_and(|d| d.keys().all(|k| BOUNDING.contains(&k.as_str())))
}

fn bounds_something(value: &Bson) -> bool {
    value.as_document().is_some_and(|d| {
        d.keys().any(|k| BOUNDING.contains(&k.as_str()))
            || d.get("$exists") == Some(&Bson::Boolean(false))
    })
}

fn same_set(a: &[&str], b: &[&str]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::{Index, served};

    fn indexes() -> Vec<Index> {
        let index = |keys, unique| Index { keys, unique };
        vec![
            index(doc! { "_id": 1 }, true),
            index(
                doc! { "tenantId": 1, "conversationId": 1, "createdAt": 1 },
                false,
            ),
            index(doc! { "dedupKey": 1 }, true),
            index(doc! { "externalId": 1 }, false),
        ]
    }

    #[test]
    fn what_the_router_serves() {
        let ix = indexes();
        let ok = |f: bson::Document| served(&f, &ix, true).is_ok();
        assert!(ok(doc! { "_id": "a" }));
        assert!(ok(doc! { "_id": "a", "tenantId": "t", "status": "QUEUED" }));
        assert!(ok(doc! { "tenantId": "t", "conversationId": "c" }));
        assert!(ok(
            doc! { "conversationId": "c", "tenantId": "t", "createdAt": { "$lt": 5 } }
        ));
        assert!(ok(
            doc! { "$and": [ { "tenantId": "t", "conversationId": "c" }, { "$and": [ { "direction": "OUT" } ] } ] }
        ));
        assert!(ok(
            doc! { "$or": [ { "_id": "a" }, { "tenantId": "t", "conversationId": "c" } ] }
        ));
        // The whole tenant, or the whole collection.
        assert!(!ok(
            doc! { "tenantId": "t", "conversationId": "c", "direction": "OUT" }
        ));
        assert!(!ok(
            doc! { "tenantId": "t", "conversationId": "c", "status": { "$in": ["A"] }, "createdAt": { "$lt": 5 } }
        ));
        assert!(!ok(
            doc! { "_id": "a", "tenantId": "t", "$or": [ { "s": 1 }, { "s": 2 } ] }
        ));
        assert!(!ok(
            doc! { "$and": [ { "tenantId": "t" }, { "direction": "OUT" } ] }
        ));
        assert!(!ok(doc! {}));
        // A unique field bounds the read to one document; another does not.
        assert!(ok(doc! { "dedupKey": "k", "tenantId": "t" }));
        assert!(!ok(doc! { "externalId": "k", "tenantId": "t", "x": 1 }));
        assert!(!ok(doc! { "conversationId": { "$ne": "c" } }));
        assert!(
            served(
                &doc! { "$or": [ { "_id": "a" }, { "_id": "b" } ] },
                &ix,
                false
            )
            .is_err(),
            "updates do not route an $or"
        );
    }
}
