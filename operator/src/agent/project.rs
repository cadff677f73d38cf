//! The program's project file (`Pulumi.yaml`, `.yml` or `.json`): its name prefixes config keys
//! and, with the runtime, is reported in every operation result so a Stack can later be
//! destroyed without its source.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub name: String,
    pub runtime: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(
        "no Pulumi.yaml in {0}: the workspace must hold a Pulumi program (check the source's dir)"
    )]
    Missing(String),
    #[error("{file} is not a valid Pulumi project file: {detail}")]
    Invalid { file: String, detail: String },
}

#[derive(Deserialize)]
struct Raw {
    name: Option<String>,
    runtime: Option<Runtime>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Runtime {
    Name(String),
    Full { name: String },
}

impl Project {
    pub fn load(dir: &Path) -> Result<Project, ProjectError> {
        for file in ["Pulumi.yaml", "Pulumi.yml", "Pulumi.json"] {
            let path = dir.join(file);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let invalid = |detail: String| ProjectError::Invalid {
                file: path.display().to_string(),
                detail,
            };
            // JSON is YAML, so one parser reads all three.
            let raw: Raw = serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
            let name = raw
                .name
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid("no `name`".into()))?;
            let runtime = match raw.runtime {
                Some(Runtime::Name(n)) | Some(Runtime::Full { name: n }) => n,
                None => return Err(invalid("no `runtime`".into())),
            };
            return Ok(Project { name, runtime });
        }
        Err(ProjectError::Missing(dir.display().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_may_be_a_name_or_an_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Pulumi.yaml"), "name: app\nruntime: yaml\n")
            .expect("write");
        assert_eq!(
            Project::load(dir.path()).expect("load"),
            Project {
                name: "app".into(),
                runtime: "yaml".into()
            }
        );
        std::fs::write(
            dir.path().join("Pulumi.yaml"),
            "name: app\nruntime:\n  name: nodejs\n  options: {typescript: true}\n",
        )
        .expect("write");
        assert_eq!(Project::load(dir.path()).expect("load").runtime, "nodejs");
        std::fs::remove_file(dir.path().join("Pulumi.yaml")).expect("rm");
        assert!(matches!(
            Project::load(dir.path()),
            Err(ProjectError::Missing(_))
        ));
        std::fs::write(
            dir.path().join("Pulumi.json"),
            "{\"name\": \"j\", \"runtime\": \"go\"}",
        )
        .expect("write");
        assert_eq!(Project::load(dir.path()).expect("load").name, "j");
    }
}
