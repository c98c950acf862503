//! One profile to Pyroscope's HTTP ingest API:
//! `POST /ingest?name=<app>{labels}&from=<unix s>&until=<unix s>&format=pprof&spyName=…`
//! with a `multipart/form-data` body whose `profile` part is the gzipped pprof file
//! and whose `sample_type_config` part tells the server the units and aggregation of
//! each sample type (without it the server keeps only the sample types it knows from
//! Go, and would drop `blocked`).
//!
//! Each view is its own profile type. Pyroscope names a profile type
//! `<name>:<sample type>:<unit>:<period type>:<period unit>`, where `<name>` (the
//! `__name__` label) comes from the sample types' `display-name` in
//! `sample_type_config`: one containing `inuse_` or `alloc_` makes `memory`, `cpu`
//! makes `process_cpu`, `block_` `block`, `mutex_` `mutex`; any other is taken as the
//! name itself. memory.pb.gz and allocations.pb.gz have the same sample types
//! (`inuse_space`, `inuse_objects`), so their names must differ: see [`profile_name`].
use std::{collections::BTreeMap, io::Read as _, path::Path, time::SystemTime};

use prost::Message as _;
use ureq::unversioned::multipart::{Form, Part};

use super::PushError;
use crate::render::pprof::proto;

/// The `spyName` we report (Pyroscope keeps it as a label of the series).
pub const SPY_NAME: &str = "profiler";

/// A ready request: the URL with its query and the two body parts.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestRequest {
    pub url: String,
    pub query: Vec<(String, String)>,
    pub profile: Vec<u8>,
    pub sample_type_config: String,
    /// `X-Scope-OrgID`, the tenant of a multi-tenant Pyroscope.
    pub tenant: Option<String>,
}

/// `http://host:4040` → `http://host:4040/ingest`. `https://` works too (rustls with
/// the Mozilla root certificates); `user:password@` in the URL is sent as basic auth.
pub fn ingest_url(base: &str) -> Result<String, PushError> {
    let error = |reason| PushError::Url {
        url: base.to_string(),
        reason,
    };
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .ok_or_else(|| error("must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(error("has no host"));
    }
    let trimmed = base.trim_end_matches('/');
    Ok(if trimmed.ends_with("/ingest") {
        trimmed.to_string()
    } else {
        format!("{trimmed}/ingest")
    })
}

/// `app{k=v,…}` with keys and values made safe for Pyroscope's name syntax.
pub fn series_name(app: &str, labels: &BTreeMap<String, String>) -> String {
    let key = |k: &str| -> String {
        k.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let value = |v: &str| -> String {
        v.chars()
            .map(|c| {
                if matches!(c, '{' | '}' | ',' | '=' | '"') {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    };
    let pairs: Vec<String> = labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{}={}", key(k), value(v)))
        .collect();
    format!("{}{{{}}}", key(app), pairs.join(","))
}

/// The profile name (`__name__`) a view is pushed under, by its file name:
/// allocations.pb.gz is the allocator's live heap blocks, `memory` as for a Go heap
/// profile; memory.pb.gz is live mapped bytes by the stack that mapped them,
/// `mapped`; waits.pb.gz is blocked time, `blocked`. Unknown files keep their sample
/// types' own names.
pub fn profile_name(file: &Path) -> Option<&'static str> {
    let name = file.file_name()?.to_str()?;
    let view = name.strip_suffix(crate::layout::PPROF_SUFFIX)?;
    use crate::layout::View;
    [
        (View::Allocations, "memory"),
        (View::Memory, "mapped"),
        (View::Waits, "blocked"),
    ]
    .into_iter()
    .find(|(v, _)| v.name() == view)
    .map(|(_, profile)| profile)
}

/// Build the request for one `.pb.gz` file.
pub fn request(
    url: &str,
    name: &str,
    from: SystemTime,
    until: SystemTime,
    file: &Path,
) -> Result<IngestRequest, PushError> {
    let profile = std::fs::read(file).map_err(|source| PushError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let sample_type_config =
        sample_type_config(&profile, profile_name(file)).map_err(|reason| PushError::Profile {
            path: file.to_path_buf(),
            reason,
        })?;
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string()
    };
    let query = vec![
        ("name".to_string(), name.to_string()),
        ("from".to_string(), secs(from)),
        // Pyroscope wants until > from: a window under a second still spans one.
        (
            "until".to_string(),
            secs(until.max(from + std::time::Duration::from_secs(1))),
        ),
        ("format".to_string(), "pprof".to_string()),
        ("spyName".to_string(), SPY_NAME.to_string()),
    ];
    Ok(IngestRequest {
        url: url.to_string(),
        query,
        profile,
        sample_type_config,
        tenant: None,
    })
}

/// The JSON `sample_type_config` of a gzipped profile, from its own sample types:
/// `inuse_*` values are levels (averaged when merged), everything else adds up;
/// nanoseconds and counts of a wait profile are Pyroscope's lock units. Every sample
/// type's `display-name` is the profile name (see [`profile_name`]): `memory` needs
/// no display name of its own, the `inuse_*` types say it.
pub fn sample_type_config(gz: &[u8], profile: Option<&str>) -> Result<String, String> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .map_err(|e| format!("gzip: {e}"))?;
    let p = proto::Profile::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))?;
    let string = |i: i64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| p.string_table.get(i))
            .map_or("", String::as_str)
    };
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (string(t.r#type), string(t.unit)))
        .collect();
    let timed = types.iter().any(|(_, unit)| *unit == "nanoseconds");
    let mut config = serde_json::Map::new();
    for (kind, unit) in types {
        let units = match unit {
            "bytes" => "bytes",
            "nanoseconds" => "lock_nanoseconds",
            _ if timed => "lock_samples",
            _ => "objects",
        };
        let aggregation = if kind.starts_with("inuse_") {
            "average"
        } else {
            "sum"
        };
        let display = match profile {
            Some(name) if name != "memory" => name,
            _ => kind,
        };
        config.insert(
            kind.to_string(),
            serde_json::json!({ "units": units, "aggregation": aggregation, "display-name": display }),
        );
    }
    Ok(serde_json::Value::Object(config).to_string())
}

/// Send one request with `agent`.
pub fn send(agent: &ureq::Agent, req: &IngestRequest) -> Result<(), PushError> {
    let form = Form::new()
        .part(
            "profile",
            Part::bytes(&req.profile)
                .file_name("profile.pprof")
                .mime_str("application/octet-stream")
                .map_err(|e| PushError::Transport(e.to_string()))?,
        )
        .part(
            "sample_type_config",
            Part::bytes(req.sample_type_config.as_bytes())
                .file_name("sample_type_config.json")
                .mime_str("application/json")
                .map_err(|e| PushError::Transport(e.to_string()))?,
        );
    let mut builder = agent.post(&req.url);
    for (k, v) in &req.query {
        builder = builder.query(k, v);
    }
    if let Some(tenant) = &req.tenant {
        builder = builder.header("X-Scope-OrgID", tenant);
    }
    match builder.send(form) {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_string()
                .unwrap_or_default();
            Err(PushError::Status {
                status,
                body: body.trim().chars().take(200).collect(),
            })
        }
        Err(e) => Err(PushError::Transport(e.to_string())),
    }
}

/// An agent that returns error statuses as responses (to read their bodies) and
/// gives up on a request after `timeout`.
pub fn agent(timeout: std::time::Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::pprof::{to_gzip, ProfileModel, ValueKind};

    /// Check the URL rules: /ingest appended once, http and https only, a host needed.
    #[test]
    fn ingest_urls() {
        assert_eq!(ingest_url("http://p:4040").unwrap(), "http://p:4040/ingest");
        assert_eq!(
            ingest_url("http://p:4040/").unwrap(),
            "http://p:4040/ingest"
        );
        assert_eq!(ingest_url("http://p/ingest").unwrap(), "http://p/ingest");
        assert_eq!(
            ingest_url("https://u:p@profiles.example/").unwrap(),
            "https://u:p@profiles.example/ingest"
        );
        assert!(ingest_url("ftp://p").is_err());
        assert!(ingest_url("http://").is_err());
    }

    /// Check that the series name carries sorted labels with unsafe characters replaced.
    #[test]
    fn series_names() {
        let labels = BTreeMap::from([
            ("host".to_string(), "node-1".to_string()),
            ("process".to_string(), "svc {a,b=c}".to_string()),
            ("container".to_string(), String::new()),
        ]);
        assert_eq!(
            series_name("profiler", &labels),
            "profiler{host=node-1,process=svc _a_b_c_}"
        );
    }

    /// Check that the sample type config follows the profile's own sample types.
    #[test]
    fn sample_type_config_from_profile() {
        let model = |types: &[(&str, &str)]| ProfileModel {
            sample_types: types.iter().map(|(k, u)| ValueKind::new(k, u)).collect(),
            default_sample_type: None,
            period_type: ValueKind::new("x", "y"),
            period: 1,
            time_nanos: 0,
            duration_nanos: 0,
            comments: Vec::new(),
            samples: Vec::new(),
        };
        let memory = to_gzip(&model(&[
            ("inuse_space", "bytes"),
            ("inuse_objects", "count"),
        ]))
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&sample_type_config(&memory, Some("memory")).unwrap()).unwrap();
        assert_eq!(v["inuse_space"]["units"], "bytes");
        assert_eq!(v["inuse_space"]["display-name"], "inuse_space");
        assert_eq!(v["inuse_space"]["aggregation"], "average");
        assert_eq!(v["inuse_objects"]["units"], "objects");
        let waits = to_gzip(&model(&[("blocked", "nanoseconds"), ("count", "count")])).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&sample_type_config(&waits, Some("blocked")).unwrap()).unwrap();
        assert_eq!(v["count"]["display-name"], "blocked");
        assert_eq!(v["blocked"]["units"], "lock_nanoseconds");
        assert_eq!(v["blocked"]["aggregation"], "sum");
        assert_eq!(v["count"]["units"], "lock_samples");
        assert!(sample_type_config(b"not gzip", None).is_err());
    }

    /// Check that the two memory views are pushed under different profile names and
    /// unknown files under none.
    #[test]
    fn views_have_their_own_profile_names() {
        let name = |f: &str| profile_name(Path::new(f));
        assert_eq!(name("/d/allocations.pb.gz"), Some("memory"));
        assert_eq!(name("/d/memory.pb.gz"), Some("mapped"));
        assert_eq!(name("/d/waits.pb.gz"), Some("blocked"));
        assert_eq!(name("/d/other.pb.gz"), None);
        assert_eq!(name("/d/memory.folded"), None);
    }
}
