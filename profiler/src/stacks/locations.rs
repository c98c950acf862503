//! Symbolized frames → pprof code locations (address, mapping with build ID, inlined
//! lines), kept next to the frame names so pprof files carry what folded files cannot.
use std::sync::Arc;

use crate::{
    events::StackId,
    model::{build_id_hex, CodeLine, CodeLocation, ModuleMapping},
    stacks::StackTable,
    symbolize::Frame,
    unwind::AddressSpace,
};

/// The code locations of an interned stack (empty for no stack).
pub fn of_stack(stacks: &StackTable, id: Option<StackId>) -> Vec<CodeLocation> {
    id.and_then(|id| stacks.get(id))
        .map(|s| s.locations.clone())
        .unwrap_or_default()
}

/// One location per address, root first. `per_addr` is the symbolizer's output for
/// `addrs` (leaf address first; per address the function, then its inlined callees).
/// An inlined frame named like its caller is dropped, as the folded names do, so both
/// views show the same functions.
pub fn root_first_locations(
    space: &AddressSpace,
    addrs: &[u64],
    per_addr: &[Vec<Frame>],
) -> Vec<CodeLocation> {
    addrs
        .iter()
        .zip(per_addr)
        .rev()
        .map(|(&addr, frames)| {
            let mut lines: Vec<CodeLine> = Vec::with_capacity(frames.len());
            for f in frames {
                if lines.last().is_some_and(|l| l.function == f.function) {
                    continue;
                }
                lines.push(CodeLine {
                    function: f.function.clone(),
                    file: f.file.clone(),
                    line: f.line,
                });
            }
            CodeLocation {
                address: addr,
                module: mapping_of(space, addr),
                lines,
            }
        })
        .collect()
}

/// The file mapping `addr` falls in, with its module's build ID.
fn mapping_of(space: &AddressSpace, addr: u64) -> Option<Arc<ModuleMapping>> {
    let module = space.module_for(addr)?;
    let (start, limit, offset) = match module.mappings.iter().find(|m| m.avma.contains(&addr)) {
        Some(m) => (m.avma.start, m.avma.end, m.offset),
        None => (module.avma.start, module.avma.end, 0),
    };
    Some(Arc::new(ModuleMapping {
        start,
        limit,
        offset,
        path: module.path.clone(),
        build_id: module.build_id.as_deref().map(build_id_hex),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::{FileMapping, MappedModule};

    fn frame(name: &str, file_line: Option<(&str, u32)>, inlined: bool) -> Frame {
        Frame {
            function: name.into(),
            module: "m".into(),
            file: file_line.map(|(f, _)| f.into()),
            line: file_line.map(|(_, l)| l),
            inlined,
        }
    }

    /// Check that locations come out root first, one per address, with inlined callees
    /// as extra lines (same-named ones once), file and line, and the file mapping and
    /// build ID of the module the address falls in.
    #[test]
    fn locations_carry_lines_and_mappings() {
        let space = AddressSpace::from_modules(vec![MappedModule {
            path: "/usr/bin/app".into(),
            open_path: "/usr/bin/app".into(),
            avma: 0x1000..0x5000,
            bias: 0x1000,
            build_id: Some(vec![0xab, 0x01]),
            mappings: vec![
                FileMapping {
                    avma: 0x1000..0x2000,
                    offset: 0,
                    exec: false,
                },
                FileMapping {
                    avma: 0x2000..0x5000,
                    offset: 0x1000,
                    exec: true,
                },
            ],
        }]);
        let addrs = [0x2100, 0x2200, 0x9000];
        let per_addr = vec![
            vec![
                frame("__mmap64", None, false),
                frame("__mmap64", None, true),
            ],
            vec![
                frame("map_region", Some(("/src/app.c", 10)), false),
                frame("touch", Some(("/src/app.h", 3)), true),
            ],
            vec![frame("[unknown] 0x9000", None, false)],
        ];
        let locs = root_first_locations(&space, &addrs, &per_addr);
        assert_eq!(locs.len(), 3);
        assert_eq!(locs[0].address, 0x9000);
        assert!(locs[0].module.is_none());
        assert_eq!(locs[1].address, 0x2200);
        let names: Vec<&str> = locs[1].lines.iter().map(|l| l.function.as_str()).collect();
        assert_eq!(names, ["map_region", "touch"]);
        assert_eq!(locs[1].lines[0].file.as_deref(), Some("/src/app.c"));
        assert_eq!(locs[1].lines[0].line, Some(10));
        let m = locs[1].module.as_deref().unwrap();
        assert_eq!((m.start, m.limit, m.offset), (0x2000, 0x5000, 0x1000));
        assert_eq!(m.build_id.as_deref(), Some("ab01"));
        assert_eq!(
            locs[2].lines.len(),
            1,
            "same-named inlined frame shown once"
        );
    }
}
