//! Store locations as users write them: `sqlite://PATH` or `etcd://HOST:PORT,...`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::StoreError;
use crate::etcd::{EtcdOptions, EtcdStore};
use crate::sqlite::{SqliteOptions, SqliteStore};
use crate::store::Store;

/// A parsed `--store` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded store in this file.
    Sqlite(PathBuf),
    /// An etcd cluster at these client URLs (`http://host:port`).
    Etcd(Vec<String>),
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        let bad = |reason: &str| StoreError::Backend(format!("invalid store URL {s:?}: {reason}"));
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(bad("missing path"));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if let Some(hosts) = s.strip_prefix("etcd://") {
            let endpoints: Vec<String> = hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| {
                    if h.contains("://") {
                        h.to_owned()
                    } else {
                        format!("http://{h}")
                    }
                })
                .collect();
            if endpoints.is_empty() {
                return Err(bad("no etcd endpoints"));
            }
            return Ok(StoreUrl::Etcd(endpoints));
        }
        Err(bad(
            "expected sqlite://PATH or etcd://HOST:PORT[,HOST:PORT...]",
        ))
    }
}

impl StoreUrl {
    /// Opens the store with default options.
    pub async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            StoreUrl::Sqlite(path) => SqliteStore::open(SqliteOptions::new(path.clone()))?,
            StoreUrl::Etcd(endpoints) => {
                Arc::new(EtcdStore::connect(EtcdOptions::new(endpoints.clone())).await?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes() {
        assert_eq!(
            "sqlite:///var/lib/k.db".parse::<StoreUrl>().ok(),
            Some(StoreUrl::Sqlite("/var/lib/k.db".into()))
        );
        assert_eq!(
            "etcd://10.0.0.1:2379,https://h:2379"
                .parse::<StoreUrl>()
                .ok(),
            Some(StoreUrl::Etcd(vec![
                "http://10.0.0.1:2379".into(),
                "https://h:2379".into()
            ]))
        );
        assert!("etcd://".parse::<StoreUrl>().is_err());
        assert!("sqlite://".parse::<StoreUrl>().is_err());
        assert!("mysql://x".parse::<StoreUrl>().is_err());
    }
}
