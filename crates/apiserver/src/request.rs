//! What a request addresses and asks for: the URL path of a resource request,
//! and the query options of list, watch, write and delete requests.

use std::collections::HashMap;

use base64::Engine;
use kybern_apimachinery::ApiError;
use kybern_apimachinery::fields::FieldSelector;
use kybern_apimachinery::labels::Selector;
use kybern_store::Revision;
use serde_json::json;

use crate::storage::parse_rv;

/// The parts of a resource URL:
/// `/api/v1[/namespaces/{ns}]/{resource}[/{name}[/{subresource}]]` or the same
/// under `/apis/{group}/{version}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourcePath {
    /// API group; empty for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the URL, if any.
    pub namespace: Option<String>,
    /// Plural resource name.
    pub resource: String,
    /// Object name, if any.
    pub name: Option<String>,
    /// Subresource, if any.
    pub subresource: Option<String>,
    /// For `.../{name}/proxy/{path}`: the path to proxy to (with its
    /// leading `/`, undecoded).
    pub proxy_path: Option<String>,
}

impl ResourcePath {
    /// Parses a path; `None` when it is not a resource path (e.g. `/api`).
    pub fn parse(path: &str) -> Option<Self> {
        // A proxied path keeps its trailing `/` (`.../proxy/` is the
        // backend's root; a bare `.../proxy` is redirected there).
        let trailing = path.len() > 1 && path.ends_with('/');
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", version, rest @ ..] => (String::new(), (*version).to_owned(), rest),
            ["apis", group, version, rest @ ..] => {
                ((*group).to_owned(), (*version).to_owned(), rest)
            }
            _ => return None,
        };
        if rest.iter().any(|s| s.is_empty()) {
            return None;
        }
        let mut p = ResourcePath {
            group,
            version,
            ..ResourcePath::default()
        };
        // `namespaces/{ns}/{resource}...` addresses a namespaced resource, while
        // `namespaces`, `namespaces/{name}` and `namespaces/{name}/{status|finalize}`
        // address namespaces themselves.
        let rest = match rest {
            ["namespaces", ns, resource, tail @ ..]
                if p.group.is_empty() && !matches!(*resource, "status" | "finalize")
                    || !p.group.is_empty() =>
            {
                p.namespace = Some((*ns).to_owned());
                let mut v = vec![*resource];
                v.extend_from_slice(tail);
                v
            }
            other => other.to_vec(),
        };
        match rest.as_slice() {
            [resource] => p.resource = (*resource).to_owned(),
            [resource, name] => {
                p.resource = (*resource).to_owned();
                p.name = Some((*name).to_owned());
            }
            [resource, name, sub] => {
                p.resource = (*resource).to_owned();
                p.name = Some((*name).to_owned());
                p.subresource = Some((*sub).to_owned());
                if *sub == "proxy" && trailing {
                    p.proxy_path = Some("/".to_owned());
                }
            }
            [resource, name, "proxy", tail @ ..] => {
                p.resource = (*resource).to_owned();
                p.name = Some((*name).to_owned());
                p.subresource = Some("proxy".to_owned());
                let slash = if trailing { "/" } else { "" };
                p.proxy_path = Some(format!("/{}{slash}", tail.join("/")));
            }
            _ => return None,
        }
        Some(p)
    }
}

/// Query parameters, decoded.
#[derive(Clone, Debug, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Query(map)
    }

    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    /// Whether `dryRun=All` was asked for; other values are refused as upstream does.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.0.get("dryRun").map(String::as_str) {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other:?}"
            ))),
        }
    }
}

/// Decodes a query component (`%XX` and `+` as a space).
pub(crate) fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a list chooses its revision (`resourceVersion` + `resourceVersionMatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListRevision {
    /// The latest state (no resourceVersion, or "0": any is fine, and the latest is served).
    Latest,
    /// At least this revision.
    NotOlderThan(Revision),
    /// Exactly this revision.
    Exact(Revision),
}

/// Options of a list or watch.
#[derive(Clone, Debug)]
pub struct ListOptions {
    /// Label selector.
    pub labels: Selector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Page size; 0 = all.
    pub limit: usize,
    /// Continue token, decoded: (revision, last key).
    pub continue_from: Option<(Revision, String)>,
    /// Revision choice.
    pub revision: ListRevision,
    /// The raw `resourceVersion` (watch uses it as its start).
    pub resource_version: Option<String>,
    /// `watch=true`.
    pub watch: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
}

impl ListOptions {
    /// Parses and checks the options as upstream does.
    pub fn parse(q: &Query) -> Result<Self, ApiError> {
        let labels = Selector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let limit = match q.get("limit") {
            None | Some("") => 0,
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
                .max(0) as usize,
        };
        let rv = q
            .get("resourceVersion")
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let continue_from = match q.get("continue").filter(|s| !s.is_empty()) {
            Some(token) => {
                if rv.is_some() {
                    return Err(ApiError::bad_request(
                        "specifying resource version is not allowed when using continue",
                    ));
                }
                Some(decode_continue(token)?)
            }
            None => None,
        };
        let revision = match (
            rv.as_deref(),
            q.get("resourceVersionMatch").filter(|s| !s.is_empty()),
        ) {
            (None, None) => ListRevision::Latest,
            // A watch-list from "now": client-go 1.35's informers start so.
            (None, Some("NotOlderThan"))
                if q.flag("watch") && q.get("sendInitialEvents").is_some() =>
            {
                ListRevision::Latest
            }
            (None, Some(m)) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch {m:?} is forbidden unless resourceVersion is provided"
                )));
            }
            (Some("0"), None | Some("NotOlderThan")) => ListRevision::Latest,
            (Some(rv), None | Some("NotOlderThan")) => ListRevision::NotOlderThan(parse_rv(rv)?),
            (Some(rv), Some("Exact")) => {
                let r = parse_rv(rv)?;
                if r == 0 {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                    ));
                }
                ListRevision::Exact(r)
            }
            (Some(_), Some(m)) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported resourceVersionMatch {m:?}"
                )));
            }
        };
        let timeout_seconds = q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok());
        let send_initial_events = q.get("sendInitialEvents").map(|v| v == "true");
        Ok(ListOptions {
            labels,
            fields,
            limit,
            continue_from,
            revision,
            resource_version: rv,
            watch: q.flag("watch"),
            bookmarks: q.flag("allowWatchBookmarks"),
            timeout_seconds,
            send_initial_events,
        })
    }
}

/// Encodes a continue token as upstream does: base64 of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<key after the prefix>"}`.
pub fn encode_continue(revision: Revision, start: &str) -> String {
    let body = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body.to_string())
}

fn decode_continue(token: &str) -> Result<(Revision, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if v.get("v").and_then(|x| x.as_str()) != Some("meta.k8s.io/v1") {
        return Err(bad());
    }
    let rv = v
        .get("rv")
        .and_then(|x| x.as_i64())
        .filter(|r| *r > 0)
        .ok_or_else(bad)?;
    let start = v.get("start").and_then(|x| x.as_str()).ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rv, start.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resource_paths() {
        let p = ResourcePath::parse("/api/v1/namespaces/default/configmaps/x").expect("path");
        assert_eq!(
            (
                p.namespace.as_deref(),
                p.resource.as_str(),
                p.name.as_deref()
            ),
            (Some("default"), "configmaps", Some("x"))
        );
        let p = ResourcePath::parse("/api/v1/namespaces/kube-system").expect("path");
        assert_eq!(
            (p.namespace, p.resource.as_str(), p.name.as_deref()),
            (None, "namespaces", Some("kube-system"))
        );
        let p = ResourcePath::parse("/api/v1/namespaces/x/status").expect("path");
        assert_eq!(
            (p.resource.as_str(), p.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let p =
            ResourcePath::parse("/apis/apps/v1/namespaces/d/deployments/web/scale").expect("path");
        assert_eq!(
            (p.group.as_str(), p.subresource.as_deref()),
            ("apps", Some("scale"))
        );
        let p = ResourcePath::parse("/apis/apps/v1/deployments").expect("path");
        assert_eq!((p.namespace, p.resource.as_str()), (None, "deployments"));
        let p = ResourcePath::parse("/api/v1/nodes/n1/proxy/stats/summary").expect("path");
        assert_eq!(
            (
                p.resource.as_str(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            ("nodes", Some("n1"), Some("proxy"))
        );
        assert_eq!(p.proxy_path.as_deref(), Some("/stats/summary"));
        let proxied = |path: &str| ResourcePath::parse(path).expect("path").proxy_path;
        let pods = "/api/v1/namespaces/d/pods/web:8080/proxy";
        assert_eq!(proxied(pods), None);
        assert_eq!(proxied(&format!("{pods}/")).as_deref(), Some("/"));
        assert_eq!(proxied(&format!("{pods}/a/b")).as_deref(), Some("/a/b"));
        assert_eq!(proxied(&format!("{pods}/a/b/")).as_deref(), Some("/a/b/"));
        assert!(ResourcePath::parse("/api/v1/nodes/n1/status/x").is_none());
        assert!(ResourcePath::parse("/api").is_none());
        assert!(ResourcePath::parse("/api/v1//x").is_none());
        assert!(ResourcePath::parse("/api/v1/a/b/c/d").is_none());
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "default/web");
        assert_eq!(
            decode_continue(&t).ok(),
            Some((42, "default/web".to_owned()))
        );
        assert!(decode_continue("garbage!").is_err());
        assert!(decode_continue(&encode_continue(5, "../x")).is_err());
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&limit=5&watch=1",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        let o = ListOptions::parse(&q).expect("options");
        assert_eq!(o.limit, 5);
        assert!(ListOptions::parse(&Query::parse(Some("resourceVersionMatch=Exact"))).is_err());
        assert!(ListOptions::parse(&Query::parse(Some("labelSelector=a%20b"))).is_err());
        // client-go 1.35's watch-list from "now" has a match and no version.
        let watch_list = ListOptions::parse(&Query::parse(Some(
            "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
        )))
        .expect("watch-list without a resourceVersion");
        assert_eq!(watch_list.revision, ListRevision::Latest);
        assert!(
            ListOptions::parse(&Query::parse(Some("resourceVersionMatch=NotOlderThan"))).is_err()
        );
        assert_eq!(Query::parse(Some("a=%zz%4")).get("a"), Some("%zz%4"));
    }
}
