# Expected values for vigil.stats.sequential (SAP 7), computed with R's Sequential package (4.5).
#
# Usage (from the project root):  Rscript tests/reference/sequential_reference.R tests/reference
# Reads  <root>/data/sequential_series.csv  (series, look, observed, expected: cumulative O and E)
# Writes <root>/expected/sequential/looks.csv and <root>/expected/sequential/versions.csv
# Needs the CRAN package Sequential 4.5 and its imports pmultinom, boot, maxLik (Debian: r-cran-boot,
# r-cran-maxlik, r-cran-fftw; then R CMD INSTALL the pmultinom 1.0.0 and Sequential 4.5 sources).
#
# Every series runs in a fresh temporary folder:
#   AnalyzeSetUp.Poisson(SampleSize = 60, alpha = 0.05, D = 0, M = 4, AlphaSpendType = "power-type", rho = 1)
#   then Analyze.Poisson(test = k, cum.mu0 = E_k, events = O_k - O_{k-1}) look by look.
# Analyze.Poisson returns its table rounded (LLR to 2 digits, alpha to 4), so the unrounded critical
# value (row 3), actual alpha (row 5) and target alpha (row 7) are read from the state file that it
# keeps (<name>.txt, written by write.table with 15 significant digits); NA where its table says NA.
# status is the branch of its report, from its message:
#   before_M          "H0 cannot be rejected yet because the cumulative events or mu0 are still smaller than M or D"
#   no_signal         "Do not reject H0. Proceed to a new test as soon as you have more data."
#   end_alpha_left    "The upper limit on the length of surveillance has been reached." + alpha left
#   end_alpha_spent   the same with "There is no remaining alpha to spend in future tests."
#   signal            "Reject H0. No further sequential analyses are needed."
#   signalled_earlier "H0 was rejected on test j."
# llr and critical_llr use Sequential's own LLR function, LLR(O_k, E_k) and LLR(CV_k, E_k) (its
# "MaxSPRT scale" plot); rr_ci_* are its non-sequential 95% CI for RR (a grid search with step 1e-4).
#
# Two kinds of data cut are refused by Sequential (events < 0 or mu0 <= 0 stop with an error); SAP 7
# wants the test to go on with the new numbers, and they are fed to it as follows:
#   O falls (o_falls): the per-look counts kept in row 4 of the state file are lowered so that they
#     add up to the new O_k, and the look is called with events = 0. Nothing but the start look and
#     the decision depends on O, so the critical values come out as Sequential computes them.
#   E falls or stays (e_falls): the look is called with mu0 = 1e-9 (no new exposure, as mu0 -> 0), and
#     the next looks with the increase over the largest E so far. r_cum_mu0 is the cumulative mu0
#     that Sequential saw (the running maximum + 1e-9 per such look).
# r_cum_events / r_cum_mu0 are the cumulative counts in Sequential's state after the look.

suppressPackageStartupMessages(library(Sequential))

args <- commandArgs(trailingOnly = TRUE)
root <- normalizePath(if (length(args) >= 1) args[1] else "tests/reference")
home <- getwd()

T_SAMPLE <- 60; ALPHA <- 0.05; M <- 4; RHO <- 1
NO_EXPOSURE <- 1e-9

LLR <- function(cc, uu) if (cc <= uu) 0 else (uu - cc) + cc * log(cc / uu)  # Sequential's, R0 = 1

status_of <- function(msgs) {
  has <- function(s) any(grepl(s, msgs, fixed = TRUE))
  if (has("H0 was rejected on test")) return("signalled_earlier")
  if (has("Reject H0. No further")) return("signal")
  if (has("There is no remaining alpha")) return("end_alpha_spent")
  if (has("The upper limit on the length of surveillance has been reached")) return("end_alpha_left")
  if (has("H0 cannot be rejected yet")) return("before_M")
  if (has("Do not reject H0")) return("no_signal")
  stop("unknown Analyze.Poisson report: ", paste(msgs, collapse = " | "))
}

is_na <- function(cell) is.na(cell) || cell == "NA"

quietly <- function(expr) {
  msgs <- character(0)
  junk <- capture.output(value <- withCallingHandlers(expr, message = function(m) {
    msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage")
  }))
  setwd(home)  # Analyze.Poisson leaves the working directory in its folder
  list(value = value, msgs = msgs)
}

run_series <- function(s) {
  dir <- tempfile("sequential-"); dir.create(dir)
  on.exit(unlink(dir, recursive = TRUE))
  name <- "series"
  state_file <- file.path(dir, paste0(name, ".txt"))
  quietly(AnalyzeSetUp.Poisson(name = name, SampleSize = T_SAMPLE, alpha = ALPHA, D = 0, M = M,
                               AlphaSpendType = "power-type", rho = RHO, R0 = 1, title = "n",
                               address = dir, Tailed = "upper"))
  rows <- list()
  r_cum_mu0 <- 0
  for (k in seq_len(nrow(s))) {
    o <- s$observed[k]; e <- s$expected[k]
    r_events <- 0
    if (k > 1) {
      state <- read.table(state_file)
      r_events <- sum(as.numeric(state[4, 1:(k - 1)]))
      if (o < r_events) {  # a correction removed events: Sequential's kept counts are corrected
        state[4, k - 1] <- state[4, k - 1] - (r_events - o)
        write.table(state, state_file)
        r_events <- o
      }
    }
    res <- if (e > r_cum_mu0) {
      quietly(Analyze.Poisson(name = name, test = k, cum.mu0 = e, events = o - r_events, AlphaSpend = "n"))
    } else {  # E fell or stayed: no new exposure
      quietly(Analyze.Poisson(name = name, test = k, mu0 = NO_EXPOSURE, events = o - r_events, AlphaSpend = "n"))
    }
    state <- read.table(state_file)
    r_cum_mu0 <- sum(as.numeric(state[6, 1:k]))
    r_cum_events <- sum(as.numeric(state[4, 1:k]))
    table <- res$value
    last <- table[nrow(table), ]
    status <- status_of(res$msgs)
    stopifnot(as.integer(last[["Test"]]) == k, r_cum_events == o)
    na_row <- is_na(last[["CV"]])
    cv <- if (na_row) NA_real_ else as.numeric(state[3, k])
    target <- if (is_na(last[["target alpha"]])) NA_real_ else as.numeric(state[7, k])
    actual <- if (is_na(last[["actual alpha"]])) NA_real_ else as.numeric(state[5, k])
    # the state file agrees with the printed table (rounded to 4 digits there)
    if (!is.na(target)) stopifnot(abs(target - as.numeric(last[["target alpha"]])) <= 5e-5 + 1e-12)
    if (!is.na(actual)) stopifnot(abs(actual - as.numeric(last[["actual alpha"]])) <= 5e-5 + 1e-12)
    if (!na_row) stopifnot(cv == as.numeric(last[["CV"]]))
    if (abs(r_cum_mu0 - e) < 1e-12) stopifnot(abs(LLR(o, e) - as.numeric(last[["LLR"]])) <= 5e-3 + 1e-12)
    rows[[k]] <- data.frame(
      series = s$series[k], look = k, observed = o, expected = e, sir = o / e,
      llr = LLR(o, e), critical_events = cv, critical_llr = if (is.na(cv)) NA_real_ else LLR(cv, e),
      alpha_target = target, alpha_spent = actual, signal = last[["Reject H0"]] == "Yes", status = status,
      rr_ci_lower = as.numeric(last[["RR_CI_lower"]]), rr_ci_upper = as.numeric(last[["RR_CI_upper"]]),
      r_cum_events = r_cum_events, r_cum_mu0 = r_cum_mu0, stringsAsFactors = FALSE)
  }
  do.call(rbind, rows)
}

write_out <- function(frame, path) {
  # 15 significant digits: what Sequential's own state file keeps
  for (col in names(frame)) if (is.double(frame[[col]])) frame[[col]] <- sprintf("%.15g", frame[[col]])
  frame[frame == "NA"] <- NA
  write.csv(frame, path, row.names = FALSE, na = "")
}

pdf(NULL)  # Analyze.Poisson draws its four plots
series <- read.csv(file.path(root, "data", "sequential_series.csv"), stringsAsFactors = FALSE,
                   colClasses = c(series = "character", look = "integer", observed = "integer", expected = "numeric"))
out <- list()
for (id in unique(series$series)) {
  s <- series[series$series == id, ]
  s <- s[order(s$look), ]
  stopifnot(identical(s$look, seq_len(nrow(s))))
  out[[id]] <- run_series(s)
  cat(id, ": ", nrow(s), " looks\n", sep = "")
}
dest <- file.path(root, "expected", "sequential")
dir.create(dest, recursive = TRUE, showWarnings = FALSE)
write_out(do.call(rbind, out), file.path(dest, "looks.csv"))
write.csv(data.frame(r = R.version.string, Sequential = as.character(packageVersion("Sequential")),
                     pmultinom = as.character(packageVersion("pmultinom"))),
          file.path(dest, "versions.csv"), row.names = FALSE)
