//! Writes the generated install files: `ferrolb-manifestgen --out .` (from the repository's root:
//! `config/`'s manifests, `bundle/`, `bundle.Dockerfile`, `catalog/`), or lists their paths
//! without `--out`.

use std::path::PathBuf;
use std::process::ExitCode;

use ferrolb_operator::manifests;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.as_slice() {
        [] => None,
        [flag, dir] if flag == "--out" => Some(PathBuf::from(dir)),
        _ => {
            eprintln!("usage: ferrolb-manifestgen [--out REPOSITORY_ROOT]");
            return ExitCode::from(2);
        }
    };
    let files = match manifests::files() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("ferrolb-manifestgen: cannot render the manifests: {e}");
            return ExitCode::FAILURE;
        }
    };
    for file in files {
        match &out {
            None => println!("{}", file.path),
            Some(dir) => {
                let path = dir.join(&file.path);
                let written = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(&path, &file.text));
                if let Err(e) = written {
                    eprintln!("ferrolb-manifestgen: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}
