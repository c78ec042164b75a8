//! The command around [`super::convert`]: reads the file (or standard input), writes the config
//! to standard output and the findings to standard error, and decides the exit code.

use std::io::{Read, Write};
use std::path::Path;

use super::{ConvertError, Options, convert};

/// Exit code: converted, nothing essential lost (warnings and notes may have been printed).
pub const CONVERTED: u8 = 0;
/// Exit code: no config printed (the input cannot be read or holds no MetalLB configuration, or
/// the converted config would not validate).
pub const FAILED: u8 = 1;
/// Exit code: the best-effort config is printed, but something essential was lost. Not 2, which
/// is clap's for a command line it refuses.
pub const ESSENTIAL_LOSS: u8 = 3;

/// Converts `file` (`-`: standard input); returns the exit code.
pub fn convert_file(file: &Path, options: &Options) -> u8 {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(file)
    };
    let mut err = std::io::stderr().lock();
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            let _ = writeln!(
                err,
                "ferrolb-operator convert: cannot read {}: {e}",
                file.display()
            );
            return FAILED;
        }
    };
    let mut out = std::io::stdout().lock();
    let code = convert_text(&text, options, &mut out, &mut err);
    let _ = out.flush();
    code
}

/// Converts `text`, writing the config to `out` and the findings to `err`; returns the exit code.
pub fn convert_text(
    text: &str,
    options: &Options,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    match convert(text, options) {
        Ok(conversion) => {
            let yaml = match conversion.to_yaml() {
                Ok(yaml) => yaml,
                Err(e) => {
                    let _ = writeln!(err, "ferrolb-operator convert: cannot write YAML: {e}");
                    return FAILED;
                }
            };
            for finding in &conversion.findings {
                let _ = writeln!(err, "{finding}");
            }
            let _ = writeln!(err, "{}", conversion.summary());
            let _ = out.write_all(yaml.as_bytes());
            if conversion.essential() > 0 {
                ESSENTIAL_LOSS
            } else {
                CONVERTED
            }
        }
        Err(e) => {
            if let ConvertError::Invalid { findings, .. } = &e {
                for finding in findings {
                    let _ = writeln!(err, "{finding}");
                }
            }
            let _ = writeln!(err, "ferrolb-operator convert: {e}");
            FAILED
        }
    }
}
