//! Formatting shared by tables and describe: kubectl's human durations and dates.

use serde_json::Value;

use crate::objects::meta;

/// kubectl's `HumanDuration` (k8s.io/apimachinery/pkg/util/duration).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (m, h) = (s / 60, s / 3600);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        let rem = s % 60;
        if rem == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rem}s")
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        let rem = m % 60;
        if rem == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rem}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        let (d, rem) = (h / 24, h % 24);
        if rem == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{rem}h")
        }
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        let (y, d) = (h / 24 / 365, (h / 24) % 365);
        if d == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{d}d")
        }
    } else {
        format!("{}y", h / 24 / 365)
    }
}

/// Age of a timestamp field, or `<unknown>`.
pub fn age(value: Option<&Value>) -> String {
    match meta::parse_time(value) {
        Some(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

/// The date format of `kubectl describe` (RFC 1123 with numeric zone).
pub fn describe_time(value: Option<&Value>) -> String {
    match meta::parse_time(value) {
        Some(t) => t.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string(),
        None => "<unset>".into(),
    }
}

/// The padding kubectl's describe tab writer puts after each cell.
const PADDING: usize = 2;

/// Lays out tab-separated text as Go's `text/tabwriter` does for kubectl's `describe` (minimum
/// width 0, padding 2, spaces, left-aligned): a tab ends a cell; the cells of one column line up
/// over each run of consecutive lines that have a cell in that column; the text after a line's
/// last tab is not part of any column.
pub fn tabbed(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut widths = Vec::new();
    format_block(&lines, 0, lines.len(), &mut widths, &mut out);
    out
}

/// `tabwriter.Writer.format`: widths of the columns left of `widths.len()` are known.
fn format_block(lines: &[Vec<&str>], mut line0: usize, line1: usize, widths: &mut Vec<usize>, out: &mut String) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].chars().count() + PADDING);
            this += 1;
        }
        widths.push(width);
        format_block(lines, line0, this, widths, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out);
}

fn write_lines(lines: &[Vec<&str>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for (i, line) in lines.iter().enumerate().take(to).skip(from) {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(w) = widths.get(j) {
                let pad = w.saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{human_duration, tabbed};

    #[test]
    fn tab_writer_aligns_runs_of_lines_like_go() {
        let text = "Name:\tn1\nCreationTimestamp:\tnow\n\tcontinued\nAddresses:\n  IP:\t1\nAllocated:\n  Resource\tRequests\tLimits\n  cpu\t1 (50%)\t0 (0%)\nEvents:\t<none>\n";
        assert_eq!(
            tabbed(text),
            "Name:               n1\nCreationTimestamp:  now\n                    continued\nAddresses:\n  IP:  1\nAllocated:\n  Resource  Requests  Limits\n  cpu       1 (50%)   0 (0%)\nEvents:     <none>\n"
        );
        // An empty cell is a column of its own (kubectl's `Name\t\tCPU Requests`).
        assert_eq!(tabbed("a\t\tb\nccc\t\td\n"), "a      b\nccc    d\n");
    }

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86400), "30d");
        assert_eq!(human_duration(-5), "<invalid>");
    }
}
