//! `cria convert`: a plan written as a GGUF file, one tensor at a time.

use crate::error::{Error, Result};
use crate::plan::{encode, OutType};
use cria_gguf::StreamWriter;
use std::path::Path;

/// Converts the folder `src` to the GGUF file `out`. Memory holds one
/// tensor (and its converted copy) at a time; the output is written to
/// `out.part` and renamed when complete, so a failed run leaves no file
/// that looks finished. `progress(done, total)` is called per tensor.
pub fn convert(
    src: &Path,
    out: &Path,
    outtype: OutType,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let plan = crate::plan(src, outtype)?;
    let infos: Vec<_> = plan
        .tensors
        .iter()
        .map(|t| (t.name.clone(), outtype.for_tensor(t), t.dims()))
        .collect();
    let metadata = &plan.metadata;
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let file = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
    let result = (|| {
        let mut w = StreamWriter::begin(
            std::io::BufWriter::with_capacity(1 << 20, file),
            metadata,
            &infos,
        )?;
        let total = plan.tensors.len();
        if let Some(t) = plan.tensors.first() {
            t.prefetch_source();
        }
        for (i, (t, (_, ty, _))) in plan.tensors.iter().zip(&infos).enumerate() {
            if let Some(next) = plan.tensors.get(i + 1) {
                next.prefetch_source();
            }
            let bytes = encode(t.dtype(), t.raw()?, *ty);
            w.write_tensor(&t.name, &bytes)?;
            drop(bytes);
            t.release_source();
            progress(i + 1, total);
        }
        let buf = w.finish()?;
        let file = buf
            .into_inner()
            .map_err(|e| Error::io(&part, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&part, e))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, out).map_err(|e| Error::io(out, e))
}
