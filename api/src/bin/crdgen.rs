//! Writes the generated CRD: `ferrolb-crdgen --out config/crd/bases`, or to stdout without `--out`.

use std::path::PathBuf;
use std::process::ExitCode;

use ferrolb_api::crd::{CRD_FILE_NAME, crd_yaml};

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
    let yaml = match crd_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("ferrolb-crdgen: cannot render the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    match out {
        None => print!("{yaml}"),
        Some(dir) => {
            let path = dir.join(CRD_FILE_NAME);
            if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, yaml))
            {
                eprintln!("ferrolb-crdgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
