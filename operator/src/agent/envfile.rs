//! The `PULUMI_ENV` file (`/share/.env`): `KEY=VALUE` lines that init containers write for the
//! Pulumi commands (credentials, `PULUMI_CONFIG_PASSPHRASE`, ...). The dotenv dialect PKO's
//! agent reads: `export ` prefixes, `#` comments, single quotes (literal) and double quotes
//! (with `\n`, `\"` and `\\` escapes).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {problem}")]
    Syntax {
        path: String,
        line: usize,
        problem: String,
    },
}

/// Reads the file; a missing file is no variables, as in PKO.
pub fn load(path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EnvFileError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    parse(&text).map_err(|(line, problem)| EnvFileError::Syntax {
        path: path.display().to_string(),
        line,
        problem,
    })
}

pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=').or_else(|| line.split_once(':')) else {
            return Err((i + 1, "expected KEY=VALUE".into()));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err((i + 1, format!("{key:?} is not a variable name")));
        }
        out.push((
            key.to_string(),
            value_of(value.trim()).map_err(|p| (i + 1, p))?,
        ));
    }
    Ok(out)
}

fn value_of(v: &str) -> Result<String, String> {
    if let Some(rest) = v.strip_prefix('\'') {
        let end = rest.find('\'').ok_or("unterminated single quote")?;
        return Ok(rest[..end].to_string());
    }
    if let Some(rest) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Ok(out),
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("unterminated double quote".into());
    }
    // Unquoted: a ` #` starts a comment.
    let v = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    Ok(v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines_parse() {
        let text = "# comment\nPULUMI_CONFIG_PASSPHRASE=test\nexport A='lit $x'\nB=\"two\\nlines\"\nC=plain # note\n\n";
        assert_eq!(
            parse(text).expect("parses"),
            vec![
                ("PULUMI_CONFIG_PASSPHRASE".into(), "test".into()),
                ("A".into(), "lit $x".into()),
                ("B".into(), "two\nlines".into()),
                ("C".into(), "plain".into()),
            ]
        );
        assert_eq!(parse("novalue\n").unwrap_err().0, 1);
        assert!(parse("X=\"open\n").is_err());
    }

    #[test]
    fn a_missing_file_is_no_variables() {
        assert!(load(Path::new("/nonexistent/.env")).expect("ok").is_empty());
    }
}
