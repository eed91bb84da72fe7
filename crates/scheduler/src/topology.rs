//! Interned node labels: numbers for label keys and values, so that a
//! scheduling cycle groups nodes into topology domains by comparing and
//! indexing integers instead of hashing label strings per node.

use std::collections::{BTreeMap, HashMap};

/// The id of an interned label key or value.
pub type LabelId = u32;

/// A node's labels as `(key, value)` ids, sorted by key id.
pub type NodeLabelIds = Vec<(LabelId, LabelId)>;

/// Label keys and values seen on nodes, each with a small number.
///
/// Ids are only ever added while nodes come and go; once most of them belong
/// to nodes that are gone, the cache rebuilds the table from the live nodes
/// ([`LabelInterner::is_bloated`]), so it stays proportional to the cluster.
#[derive(Debug, Default)]
pub struct LabelInterner {
    ids: HashMap<String, LabelId>,
    names: Vec<String>,
}

impl LabelInterner {
    /// How many strings have ids (an upper bound on every id, plus one).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The id of a string already interned.
    pub fn get(&self, s: &str) -> Option<LabelId> {
        self.ids.get(s).copied()
    }

    fn intern(&mut self, s: &str) -> LabelId {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        // Over four billion distinct label strings cannot fit in memory first.
        let id = LabelId::try_from(self.names.len()).unwrap_or(LabelId::MAX);
        self.names.push(s.to_owned());
        self.ids.insert(s.to_owned(), id);
        id
    }

    /// A node's labels as ids, interning what is new.
    pub fn node_labels(&mut self, labels: &BTreeMap<String, String>) -> NodeLabelIds {
        let mut ids: NodeLabelIds = labels
            .iter()
            .map(|(k, v)| (self.intern(k), self.intern(v)))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Whether most ids belong to strings no live node carries any more:
    /// `live` is how many label keys and values the live nodes hold in all.
    pub fn is_bloated(&self, live: usize) -> bool {
        self.names.len() > 2 * live + 1024
    }
}

/// The value id a node has for a key id, if it has the label.
pub fn domain_of(labels: &NodeLabelIds, key: LabelId) -> Option<LabelId> {
    labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// The id of `key`, and a slot per value id holding `empty` (none when no
/// node has the key: then no node is in any of its domains).
fn per_value<T: Clone>(key: &str, labels: &LabelInterner, empty: T) -> (Option<LabelId>, Vec<T>) {
    let key = labels.get(key);
    let slots = match key {
        Some(_) => vec![empty; labels.len()],
        None => Vec::new(),
    };
    (key, slots)
}

/// A set of topology domains of one key: the value ids of the nodes in it.
#[derive(Clone, Debug, Default)]
pub struct DomainSet {
    /// The key's id; `None` when no node has the key, so no node is in any
    /// of its domains.
    pub key: Option<LabelId>,
    members: Vec<bool>,
    len: usize,
}

impl DomainSet {
    /// An empty set for `key`, sized for every id `labels` has given out.
    pub fn new(key: &str, labels: &LabelInterner) -> Self {
        let (key, members) = per_value(key, labels, false);
        DomainSet {
            key,
            members,
            len: 0,
        }
    }

    /// The domain a node is in for this key.
    pub fn domain(&self, labels: &NodeLabelIds) -> Option<LabelId> {
        domain_of(labels, self.key?)
    }

    /// Whether the domain `value` is in the set.
    pub fn contains(&self, value: LabelId) -> bool {
        self.members.get(value as usize).copied().unwrap_or(false)
    }

    /// Adds the domain `value`.
    pub fn insert(&mut self, value: LabelId) {
        if let Some(m) = self.members.get_mut(value as usize)
            && !*m
        {
            *m = true;
            self.len += 1;
        }
    }

    /// Whether a node's domain for this key is in the set.
    pub fn holds_node(&self, labels: &NodeLabelIds) -> bool {
        self.domain(labels).is_some_and(|v| self.contains(v))
    }

    /// Whether no domain is in the set.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Counts per topology domain of one key, by value id.
#[derive(Clone, Debug, Default)]
pub struct DomainCounts {
    /// The key's id; `None` when no node has the key.
    pub key: Option<LabelId>,
    counts: Vec<Option<i64>>,
    domains: usize,
}

impl DomainCounts {
    /// No domain yet, for `key`.
    pub fn new(key: &str, labels: &LabelInterner) -> Self {
        let (key, counts) = per_value(key, labels, None);
        DomainCounts {
            key,
            counts,
            domains: 0,
        }
    }

    /// The domain a node is in for this key.
    pub fn domain(&self, labels: &NodeLabelIds) -> Option<LabelId> {
        domain_of(labels, self.key?)
    }

    /// Adds `n` to a domain's count, recording the domain as present.
    pub fn add(&mut self, value: LabelId, n: i64) {
        if let Some(c) = self.counts.get_mut(value as usize) {
            if c.is_none() {
                self.domains += 1;
            }
            *c = Some(c.unwrap_or(0) + n);
        }
    }

    /// A present domain's count.
    pub fn get(&self, value: LabelId) -> Option<i64> {
        self.counts.get(value as usize).copied().flatten()
    }

    /// How many domains are present.
    pub fn domains(&self) -> usize {
        self.domains
    }

    /// The smallest and the largest count over the present domains.
    pub fn min_max(&self) -> Option<(i64, i64)> {
        self.counts.iter().flatten().fold(None, |acc, &c| {
            Some(acc.map_or((c, c), |(lo, hi): (i64, i64)| (lo.min(c), hi.max(c))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn equal_strings_share_an_id_and_nodes_find_their_domains() {
        let mut i = LabelInterner::default();
        let a = i.node_labels(&labels(&[("zone", "a"), ("host", "n1")]));
        let b = i.node_labels(&labels(&[("zone", "a"), ("host", "n2")]));
        let zone = i.get("zone").expect("interned");
        assert_eq!(domain_of(&a, zone), domain_of(&b, zone));
        let host = i.get("host").expect("interned");
        assert_ne!(domain_of(&a, host), domain_of(&b, host));
        assert_eq!(domain_of(&a, i.get("n1").expect("interned")), None);
        assert_eq!(i.len(), 5);
    }

    #[test]
    fn a_domain_set_holds_the_nodes_of_its_domains_only() {
        let mut i = LabelInterner::default();
        let n1 = i.node_labels(&labels(&[("zone", "a")]));
        let n2 = i.node_labels(&labels(&[("zone", "b")]));
        let bare = i.node_labels(&labels(&[]));
        let mut set = DomainSet::new("zone", &i);
        assert!(set.is_empty());
        set.insert(set.domain(&n1).expect("has zone"));
        set.insert(set.domain(&n1).expect("has zone"));
        assert!(!set.is_empty());
        assert!(set.holds_node(&n1));
        assert!(!set.holds_node(&n2));
        assert!(!set.holds_node(&bare));
        // A key no node has: no node is in any of its domains.
        let none = DomainSet::new("rack", &i);
        assert_eq!(none.key, None);
        assert!(!none.holds_node(&n1));
    }

    #[test]
    fn domain_counts_track_present_domains_and_their_extremes() {
        let mut i = LabelInterner::default();
        let n1 = i.node_labels(&labels(&[("zone", "a")]));
        let n2 = i.node_labels(&labels(&[("zone", "b")]));
        let mut c = DomainCounts::new("zone", &i);
        assert_eq!(c.min_max(), None);
        let (a, b) = (c.domain(&n1).expect("zone"), c.domain(&n2).expect("zone"));
        c.add(a, 0);
        c.add(a, 3);
        c.add(b, 1);
        assert_eq!((c.get(a), c.get(b), c.domains()), (Some(3), Some(1), 2));
        assert_eq!(c.min_max(), Some((1, 3)));
        assert_eq!(c.get(i.get("zone").expect("interned")), None);
    }

    #[test]
    fn the_table_counts_as_bloated_once_mostly_dead() {
        let mut i = LabelInterner::default();
        for n in 0..2000 {
            i.node_labels(&labels(&[("host", &format!("n{n}"))]));
        }
        assert!(!i.is_bloated(2 * 1000));
        assert!(i.is_bloated(2 * 10));
    }
}
