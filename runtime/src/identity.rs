//! Who an image shows, as far as the input says: a key shared by every image of one person
//! (for DICOM files, the patient named by PatientID). Only the SHA-256 digest of the source
//! value is held, so no raw identifier outlives loading, and the key is never written out.

use sha2::{Digest, Sha256};

/// Domain separation: a digest of a patient ID here is no plain SHA-256 of the ID.
const PATIENT_ID_DOMAIN: &[u8] = b"unpersonal/patient-id/v1\0";

/// An opaque identity key: images with equal keys show the same person.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity([u8; 32]);

/// Never printed in full: the key stands for a person.
impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity(…)")
    }
}

impl Identity {
    /// The identity of the patient with DICOM PatientID `id` (leading and trailing spaces and
    /// NULs, which DICOM uses for padding, are ignored); `None` for an empty ID.
    pub fn of_patient_id(id: &str) -> Option<Identity> {
        let id = id.trim_matches(|c: char| c == ' ' || c == '\0');
        (!id.is_empty()).then(|| {
            Identity(
                Sha256::new()
                    .chain_update(PATIENT_ID_DOMAIN)
                    .chain_update(id.as_bytes())
                    .finalize()
                    .into(),
            )
        })
    }
}

/// For every row, the other rows known to show the same person (sorted); empty for a row with
/// no identity. This is what the gate compares a candidate with besides its source.
pub fn same_person(identities: &[Option<Identity>]) -> Vec<Vec<usize>> {
    let mut by_identity: std::collections::HashMap<Identity, Vec<usize>> =
        std::collections::HashMap::new();
    for (row, identity) in identities.iter().enumerate() {
        if let Some(identity) = identity {
            by_identity.entry(*identity).or_default().push(row);
        }
    }
    identities
        .iter()
        .enumerate()
        .map(|(row, identity)| match identity {
            Some(identity) => {
                by_identity[identity].iter().copied().filter(|&other| other != row).collect()
            }
            None => Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_ids_are_padded_hashed_and_never_shown() {
        let a = Identity::of_patient_id("PAT-0042 ").unwrap();
        assert_eq!(Identity::of_patient_id("PAT-0042\0"), Some(a));
        assert_ne!(Identity::of_patient_id("PAT-0043"), Some(a));
        assert_eq!(Identity::of_patient_id("  \0"), None);
        let plain: [u8; 32] = Sha256::digest(b"PAT-0042").into();
        assert_ne!(a.0, plain, "domain-separated");
        assert_eq!(format!("{a:?}"), "Identity(…)");
    }

    #[test]
    fn same_person_lists_the_other_rows_of_each_identity() {
        let p = Identity::of_patient_id("p");
        let q = Identity::of_patient_id("q");
        assert_eq!(
            same_person(&[p, None, q, p, p]),
            vec![vec![3, 4], vec![], vec![], vec![0, 4], vec![0, 3]]
        );
    }
}
