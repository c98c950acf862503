//! [`ProfileModel`] → pprof `Profile` message → gzipped bytes.
//!
//! Interns strings, mappings, functions and locations so each is written once, and
//! gives every sample its location ids leaf first, as pprof wants.
use std::collections::HashMap;
use std::io::Write as _;

use prost::Message as _;

use super::model::{LabelValue, ProfileModel};
use super::proto;
use crate::model::{CodeLine, CodeLocation, ModuleMapping};

/// Encode a model into the pprof message.
pub fn encode(model: &ProfileModel) -> proto::Profile {
    let mut b = Builder::default();
    b.strings.intern("");
    let sample_type = model
        .sample_types
        .iter()
        .map(|v| b.value_type(&v.kind, &v.unit))
        .collect();
    let period_type = Some(b.value_type(&model.period_type.kind, &model.period_type.unit));
    let default_sample_type = model
        .default_sample_type
        .as_deref()
        .map_or(0, |s| b.strings.intern(s));
    let comment = model.comments.iter().map(|c| b.strings.intern(c)).collect();
    b.intern_mappings_main_first(model);
    let sample = model
        .samples
        .iter()
        .map(|s| proto::Sample {
            location_id: s.stack.iter().rev().map(|l| b.location(l)).collect(),
            value: s.values.clone(),
            label: s
                .labels
                .iter()
                .map(|l| {
                    let key = b.strings.intern(&l.key);
                    match &l.value {
                        LabelValue::Str(v) => proto::Label {
                            key,
                            str: b.strings.intern(v),
                            ..Default::default()
                        },
                        LabelValue::Num { value, unit } => proto::Label {
                            key,
                            num: *value,
                            num_unit: unit.as_deref().map_or(0, |u| b.strings.intern(u)),
                            ..Default::default()
                        },
                    }
                })
                .collect(),
        })
        .collect();
    proto::Profile {
        sample_type,
        sample,
        mapping: b.mappings,
        location: b.locations,
        function: b.functions,
        string_table: b.strings.table,
        time_nanos: model.time_nanos,
        duration_nanos: model.duration_nanos,
        period_type,
        period: model.period,
        comment,
        default_sample_type,
        ..Default::default()
    }
}

/// Encode and gzip: the bytes of a `.pb.gz` file.
pub fn to_gzip(model: &ProfileModel) -> std::io::Result<Vec<u8>> {
    let raw = encode(model).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw)?;
    gz.finish()
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

#[derive(Default)]
struct Builder {
    strings: Strings,
    mappings: Vec<proto::Mapping>,
    mapping_ids: HashMap<ModuleMapping, u64>,
    functions: Vec<proto::Function>,
    function_ids: HashMap<(String, Option<String>), u64>,
    locations: Vec<proto::Location>,
    location_ids: HashMap<CodeLocation, u64>,
}

impl Builder {
    fn value_type(&mut self, kind: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.strings.intern(kind),
            unit: self.strings.intern(unit),
        }
    }

    fn location(&mut self, loc: &CodeLocation) -> u64 {
        if let Some(&id) = self.location_ids.get(loc) {
            return id;
        }
        let mapping_id = loc.module.as_deref().map_or(0, |m| self.mapping(m));
        // pprof: line[0] is the innermost inlined function, the last the caller.
        let line: Vec<proto::Line> = loc.lines.iter().rev().map(|l| self.line(l)).collect();
        if let Some(m) = mapping_id
            .checked_sub(1)
            .and_then(|i| self.mappings.get_mut(i as usize))
        {
            m.has_functions |= !line.is_empty();
            m.has_filenames |= loc.lines.iter().any(|l| l.file.is_some());
            m.has_line_numbers |= loc.lines.iter().any(|l| l.line.is_some());
            m.has_inline_frames |= line.len() > 1;
        }
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id,
            address: loc.address,
            line,
            is_folded: false,
        });
        self.location_ids.insert(loc.clone(), id);
        id
    }

    fn line(&mut self, l: &CodeLine) -> proto::Line {
        proto::Line {
            function_id: self.function(&l.function, l.file.as_deref()),
            line: l.line.map_or(0, i64::from),
            column: 0,
        }
    }

    fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let key = (name.to_owned(), file.map(str::to_owned));
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let name = self.strings.intern(name);
        let filename = file.map_or(0, |f| self.strings.intern(f));
        self.functions.push(proto::Function {
            id,
            name,
            // Frames are demangled by the symbolizer; the mangled name is not kept.
            system_name: name,
            filename,
            start_line: 0,
        });
        self.function_ids.insert(key, id);
        id
    }

    /// pprof takes the first mapping for the main binary (its name and build ID head
    /// `go tool pprof`'s output), so executables go before shared libraries; otherwise
    /// mappings keep the order in which samples (root first) reach them.
    fn intern_mappings_main_first(&mut self, model: &ProfileModel) {
        let mut seen = std::collections::HashSet::new();
        let mut order: Vec<&ModuleMapping> = model
            .samples
            .iter()
            .flat_map(|s| s.stack.iter().filter_map(|l| l.module.as_deref()))
            .filter(|m| seen.insert(*m))
            .collect();
        order.sort_by_key(|m| is_shared_library(&m.path));
        for m in order {
            self.mapping(m);
        }
    }

    fn mapping(&mut self, m: &ModuleMapping) -> u64 {
        if let Some(&id) = self.mapping_ids.get(m) {
            return id;
        }
        let id = self.mappings.len() as u64 + 1;
        let filename = self.strings.intern(&m.path);
        let build_id = m.build_id.as_deref().map_or(0, |b| self.strings.intern(b));
        self.mappings.push(proto::Mapping {
            id,
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename,
            build_id,
            ..Default::default()
        });
        self.mapping_ids.insert(m.clone(), id);
        id
    }
}

/// `libc.so.6`, `libfoo.so`: a shared library rather than an executable.
fn is_shared_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}
