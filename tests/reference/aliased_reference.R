# Expected values for a Cox model with an aliased column (vigil.stats.survival.cox_fit drops it, as
# coxph reports NA for it), computed with R's survival package.
#
# Usage (from the project root):  Rscript tests/reference/aliased_reference.R tests/reference
# Reads  <root>/data/aliased.csv  (t, status, a, b, c; b = a in every patient; make_datasets.py)
# Writes <root>/expected/aliased/cox.csv   coxph(ties = "efron"): coef, se, p per term (NA for b)
#        <root>/expected/aliased/zph.csv   cox.zph(transform = "km"): chisq, df, p per term and GLOBAL
#        <root>/expected/aliased/loglik.csv the partial log-likelihood at 0 and at the estimate

suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = TRUE)
root <- if (length(args) >= 1) args[1] else "tests/reference"
out <- file.path(root, "expected", "aliased")
dir.create(out, recursive = TRUE, showWarnings = FALSE)

d <- read.csv(file.path(root, "data", "aliased.csv"), stringsAsFactors = FALSE)
fit <- coxph(Surv(t, status) ~ a + b + c, data = d, ties = "efron")
s <- summary(fit)$coefficients
cox <- data.frame(term = rownames(s), coef = s[, "coef"],
                  se = ifelse(is.na(s[, "coef"]), NA, s[, "se(coef)"]), p = s[, "Pr(>|z|)"])
write.csv(cox, file.path(out, "cox.csv"), row.names = FALSE, na = "")

z <- cox.zph(fit, transform = "km")$table
write.csv(data.frame(term = rownames(z), chisq = z[, "chisq"], df = z[, "df"], p = z[, "p"]),
          file.path(out, "zph.csv"), row.names = FALSE, na = "")
write.csv(data.frame(at = c("zero", "estimate"), loglik = fit$loglik), file.path(out, "loglik.csv"),
          row.names = FALSE)
write.csv(data.frame(r = R.version.string, survival = as.character(packageVersion("survival"))),
          file.path(out, "versions.csv"), row.names = FALSE)
