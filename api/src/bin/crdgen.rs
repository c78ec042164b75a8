//! Writes the generated CRDs: `ferrolb-crdgen --out config/crd/bases` (one file each, named as
//! kubebuilder names them), or all of them to stdout, as one YAML stream, without `--out`.

use std::path::PathBuf;
use std::process::ExitCode;

use ferrolb_api::crd::{crd_yaml, crds, crds_yaml};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.as_slice() {
        [] => None,
        [flag, dir] if flag == "--out" => Some(PathBuf::from(dir)),
        _ => {
            eprintln!("usage: ferrolb-crdgen [--out DIR]");
            return ExitCode::from(2);
        }
    };
    let Some(dir) = out else {
        return match crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferrolb-crdgen: cannot render the CRDs: {e}");
                ExitCode::FAILURE
            }
        };
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("ferrolb-crdgen: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (file, crd) in crds() {
        let yaml = match crd_yaml(&crd) {
            Ok(yaml) => yaml,
            Err(e) => {
                eprintln!("ferrolb-crdgen: cannot render {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let path = dir.join(file);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("ferrolb-crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
