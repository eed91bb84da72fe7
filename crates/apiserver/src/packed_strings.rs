//! Short lists of strings in one buffer: the labels and selectable field
//! values the watch cache keeps beside every version of every object.
//!
//! A pod's two labels as a JSON map took a B-tree node of eleven slots
//! (~650 bytes), and its eight field values a vector of pairs plus eight
//! strings; at 20,000 pods and the versions in the event ring, tens of
//! megabytes. Packed, they take two allocations, sized to fit.

/// Strings stored end to end, with where each one ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedStrings {
    text: Box<str>,
    ends: Box<[u32]>,
}

impl PackedStrings {
    /// Packs `parts` in order.
    pub fn new<'a>(parts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut text = String::new();
        let mut ends = Vec::new();
        for part in parts {
            text.push_str(part);
            // Objects are limited to a few megabytes, far below 4 GiB.
            ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
        }
        PackedStrings {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// How many strings there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`th string.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        self.text.get(start..end)
    }

    /// The value after the first even-placed string equal to `key`, for
    /// key/value lists such as labels.
    pub fn value_of(&self, key: &str) -> Option<&str> {
        (0..self.len() / 2)
            .find(|i| self.get(2 * i) == Some(key))
            .and_then(|i| self.get(2 * i + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_come_back_as_packed_including_empty_ones() {
        let p = PackedStrings::new(["app", "web", "", "tier", "a/b", ""]);
        assert_eq!(p.len(), 6);
        let all: Vec<&str> = (0..p.len()).filter_map(|i| p.get(i)).collect();
        assert_eq!(all, ["app", "web", "", "tier", "a/b", ""]);
        assert_eq!(p.get(6), None);
        assert_eq!(p.value_of("app"), Some("web"));
        assert_eq!(p.value_of("a/b"), Some(""));
        // Only keys are matched, never values.
        assert_eq!(p.value_of("web"), None);
        assert_eq!(p.value_of("tier"), None);
        assert!(PackedStrings::new([]).is_empty());
        assert_eq!(PackedStrings::default().value_of("x"), None);
    }
}
