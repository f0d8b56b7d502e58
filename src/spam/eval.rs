//! Accuracy of the whole spam score (rules + classifier) by k-fold
//! cross-validation: the classifier is trained on the other folds, each
//! message is scored once, and the report gives spam recall and ham false
//! positives per threshold (the curve) and per group of messages.
//! `sluice learn --cross-validate K` prints it for a site's own mail;
//! docs/QUALITY.md has it for the shared SpamAssassin sample.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::bayes::Model;
use super::filter::SpamFilter;
use super::tokenize;

/// One labelled message.
pub struct Sample {
    /// A name for the list of mistakes (e.g. the file).
    pub name: String,
    pub raw: Vec<u8>,
    /// A name for the report (e.g. "easy_ham", or the directory).
    pub group: String,
    pub spam: bool,
}

/// Scores from cross-validation, in the order of the samples.
pub struct Scores {
    pub names: Vec<String>,
    pub scores: Vec<f64>,
    /// Why: the classifier's probability and the rules that hit.
    pub why: Vec<String>,
    pub spam: Vec<bool>,
    pub groups: Vec<String>,
}

/// Scores every sample with a model trained on the other folds (sample
/// `i` is in fold `i % folds`). With `bayes` false the classifier is left
/// out (rules alone).
pub fn cross_validate(filter: &SpamFilter, samples: &[Sample], folds: usize, bayes: bool) -> Scores {
    let folds = folds.max(2);
    let tokens: Vec<Vec<String>> = if bayes {
        samples.iter().map(|s| tokenize::tokens(&s.raw)).collect()
    } else {
        Vec::new()
    };
    let mut scores = vec![0.0; samples.len()];
    let mut why = vec![String::new(); samples.len()];
    for k in 0..folds {
        if bayes {
            let mut model = Model::new();
            for (i, s) in samples.iter().enumerate() {
                if i % folds != k {
                    model.learn(&tokens[i], s.spam);
                }
            }
            filter.set_model(Some(model));
        } else {
            filter.set_model(None);
        }
        for (i, s) in samples.iter().enumerate() {
            if i % folds == k {
                let scored = filter.score_offline(&s.raw);
                scores[i] = scored.score;
                why[i] = scored.rule_names();
            }
        }
    }
    Scores {
        names: samples.iter().map(|s| s.name.clone()).collect(),
        scores,
        why,
        spam: samples.iter().map(|s| s.spam).collect(),
        groups: samples.iter().map(|s| s.group.clone()).collect(),
    }
}

impl Scores {
    /// (spam recall, ham false-positive rate) at a threshold (score >= t
    /// is flagged).
    pub fn rates(&self, t: f64) -> (f64, f64) {
        let (mut spam, mut caught, mut ham, mut fp) = (0usize, 0usize, 0usize, 0usize);
        for (score, is_spam) in self.scores.iter().zip(&self.spam) {
            let flagged = *score >= t;
            if *is_spam {
                spam += 1;
                caught += usize::from(flagged);
            } else {
                ham += 1;
                fp += usize::from(flagged);
            }
        }
        (ratio(caught, spam), ratio(fp, ham))
    }

    /// Per group: (messages, flagged at `t`).
    pub fn groups(&self, t: f64) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for ((score, g), _) in self.scores.iter().zip(&self.groups).zip(&self.spam) {
            let e = out.entry(g.clone()).or_default();
            e.0 += 1;
            e.1 += usize::from(*score >= t);
        }
        out
    }

    /// A Markdown report: per group at `threshold`, then the curve.
    pub fn report(&self, threshold: f64) -> String {
        let mut s = String::new();
        let (recall, fp) = self.rates(threshold);
        let _ = writeln!(
            s,
            "At the threshold {threshold}: spam recall {:.1} %, ham false positives {:.2} %\n",
            recall * 100.0,
            fp * 100.0
        );
        let _ = writeln!(
            s,
            "| group | messages | flagged as spam | share |\n|---|---:|---:|---:|"
        );
        for (g, (n, flagged)) in self.groups(threshold) {
            let _ = writeln!(s, "| {g} | {n} | {flagged} | {:.1} % |", ratio(flagged, n) * 100.0);
        }
        let _ = writeln!(
            s,
            "\n| threshold | spam recall | ham false positives |\n|---:|---:|---:|"
        );
        for t in [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0] {
            let (r, f) = self.rates(t);
            let _ = writeln!(s, "| {t:.1} | {:.1} % | {:.2} % |", r * 100.0, f * 100.0);
        }
        s
    }

    /// The mistakes at `threshold`: ham flagged, then spam missed, each
    /// with its score, worst first.
    pub fn mistakes(&self, threshold: f64) -> String {
        let mut s = String::new();
        for (want_spam, title) in [(false, "ham flagged as spam"), (true, "spam missed")] {
            let mut list: Vec<(f64, &str, &str)> = (0..self.scores.len())
                .filter(|&i| self.spam[i] == want_spam && (self.scores[i] >= threshold) != want_spam)
                .map(|i| (self.scores[i], self.names[i].as_str(), self.why[i].as_str()))
                .collect();
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !want_spam {
                list.reverse();
            }
            let _ = writeln!(s, "{title} ({}):", list.len());
            for (score, name, why) in list {
                let _ = writeln!(s, "  {score:7.2}  {name}  {why}");
            }
        }
        s
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_groups() {
        let s = Scores {
            names: ["a", "b", "c", "d"].map(String::from).to_vec(),
            why: vec![String::new(); 4],
            scores: vec![9.0, 4.0, 1.0, 6.0],
            spam: vec![true, true, false, false],
            groups: vec!["spam".into(), "spam".into(), "ham".into(), "ham".into()],
        };
        assert_eq!(s.rates(5.0), (0.5, 0.5));
        assert_eq!(s.rates(10.0), (0.0, 0.0));
        assert_eq!(s.groups(5.0)["ham"], (2, 1));
        let r = s.report(5.0);
        assert!(r.contains("spam recall 50.0 %, ham false positives 50.00 %"), "{r}");
        assert!(r.contains("| ham | 2 | 1 | 50.0 % |"), "{r}");
        assert_eq!(
            s.mistakes(5.0),
            "ham flagged as spam (1):\n     6.00  d  \nspam missed (1):\n     4.00  b  \n"
        );
    }
}
