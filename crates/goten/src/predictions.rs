//! How predictions are shown: the same text and JSON for `goten predict` and `goten query`.
//!
//! Where it sits: the end of both commands, on the querying user's (or model owner's) machine,
//! where the logits are the user's own.

use goten_enclave::nn::model::argmax;
use serde_json::{Value, json};

/// Class `c`'s name in `names` (`class c` where there is none).
fn name(names: &[&str], c: usize) -> String {
    names
        .get(c)
        .map_or_else(|| format!("class {c}"), |s| (*s).to_string())
}

/// One image's JSON entry: `{"class": INDEX, "name": "cat", "scores": [...]}`.
pub fn entry(names: &[&str], row: &[f32]) -> Value {
    let c = argmax(row);
    json!({"class": c, "name": name(names, c), "scores": row})
}

/// The classes of `row`, most likely first, at most `k`.
pub fn top(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Prints up to `show` images' predictions (with their file labels) and the accuracy; returns
/// the accuracy.
pub fn print_text(names: &[&str], rows: &[&[f32]], labels: &[u8], show: usize, k: usize) -> f64 {
    for (i, (row, &l)) in rows.iter().zip(labels).enumerate().take(show) {
        let t: Vec<String> = top(row, k).into_iter().map(|c| name(names, c)).collect();
        println!(
            "image {i:>5}: {:<32} (label {})",
            t.join(", "),
            name(names, usize::from(l))
        );
    }
    let acc = accuracy(rows, labels);
    println!(
        "{} images, accuracy against the file's labels: {:.2} %",
        rows.len(),
        100.0 * acc
    );
    acc
}

/// The share of rows whose most likely class is the label.
pub fn accuracy(rows: &[&[f32]], labels: &[u8]) -> f64 {
    let correct = rows
        .iter()
        .zip(labels)
        .filter(|(r, l)| argmax(r) == usize::from(**l))
        .count();
    correct as f64 / rows.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_classes_and_entries() {
        let row = [0.1, 3.0, -1.0, 2.0];
        assert_eq!(top(&row, 2), vec![1, 3]);
        let e = entry(goten_data::DataFormat::Cifar10.class_names().unwrap(), &row);
        assert_eq!(e["class"], 1);
        assert_eq!(e["name"], "automobile");
        assert_eq!(e["scores"].as_array().unwrap().len(), 4);
        assert_eq!(accuracy(&[&row, &row], &[1, 0]), 0.5);
    }
}
