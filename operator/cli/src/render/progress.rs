//! The progress bar drawn from a Run's `status.progress` (`7/12`).

use super::Style;

/// `[████████░░░░░░░░░░░░] 7/12`, `width` cells wide; the text as-is when it is not `N/M`.
pub fn bar(progress: &str, width: usize, style: &Style) -> String {
    let Some((done, total)) = parse(progress) else {
        return progress.to_string();
    };
    let filled = (done * width)
        .checked_div(total)
        .unwrap_or(width)
        .min(width);
    let full = "█".repeat(filled);
    let empty = "░".repeat(width - filled);
    let full = if done >= total {
        style.green(&full)
    } else {
        style.cyan(&full)
    };
    format!("[{full}{}] {done}/{total}", style.dim(&empty))
}

fn parse(progress: &str) -> Option<(usize, usize)> {
    let (done, total) = progress.split_once('/')?;
    Some((done.trim().parse().ok()?, total.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(bar("7/12", 12, &Style::PLAIN), "[███████░░░░░] 7/12");
        assert_eq!(bar("0/4", 4, &Style::PLAIN), "[░░░░] 0/4");
        assert_eq!(bar("4/4", 4, &Style::PLAIN), "[████] 4/4");
        assert_eq!(bar("odd", 4, &Style::PLAIN), "odd");
    }
}
