//! Reading whatever the apiserver may hold. Under PKO's CRDs (a chart upgrade keeps them) or
//! from before ours were applied, objects can lack a `spec` or carry values our schemas refuse;
//! one object the operator cannot read would stop the watch of its whole kind. So a missing or
//! null `spec` reads as the default spec, and the controllers then say what is wrong with it.

/// Implements `Deserialize` (and `Serialize`) for a spec type derived with
/// `#[serde(remote = "Self")]`, whose derived code is then inherent: a missing or null spec is
/// the default one, anything else is read as derived.
macro_rules! spec_or_default {
    ($t:ty) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Present($t);
                impl<'de> serde::Deserialize<'de> for Present {
                    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                        // The inherent function serde derived (remote = "Self").
                        <$t>::deserialize(d).map(Present)
                    }
                }
                Ok(Option::<Present>::deserialize(d)?
                    .map(|p| p.0)
                    .unwrap_or_default())
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }
    };
}

/// `Option<T>` read as `T`'s default when missing or null: for a transparent spec newtype.
pub fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    use serde::Deserialize;
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}
