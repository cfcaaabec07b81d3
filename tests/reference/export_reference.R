# The tidy table of `vigil export` read by the DARWIN EU package that defines its shape, omopgenerics.
#
# Reads tests/reference/data/export_tidy.csv (written by `python tests/test_export.py --write-sample
# tests/reference/data`: a generated study, analysed and exported) with
# omopgenerics::importSummarisedResult, validates it with every check of validateResultArgument
# (settings, columns and their types, NA, estimate types, name/level pairs and snake_case, duplicated
# estimates, repeated group counts), checks that it is marked suppressed at min_cell_count 5 and shows
# no count of 1-4, and that tidy() spreads each result type; any warning is an error. Writes
# tests/reference/expected/export/summary.csv (per result_id: result_type, variant, rows, suppressed
# values, distinct estimate names, group/strata/additional names) and settings.csv (the settings as R
# reads them, without package_version: the code version of the run that made the sample), which
# tests/test_export.py compares with its own reading of the same file.
#
# Needs omopgenerics (CRAN; 1.3.0 here), which needs dplyr >= 1.1.0, newer than Debian bookworm's
# r-cran-dplyr 1.0.10: install.packages("omopgenerics") into a library of its own and name it in
# R_LIBS (the Makefile's reference target uses $(R_OMOP_LIB)).
#
# Usage: Rscript tests/reference/export_reference.R tests/reference

options(warn = 2)  # a warning of omopgenerics (e.g. a name that is not snake_case) fails the check
suppressPackageStartupMessages(library(omopgenerics))

args <- commandArgs(trailingOnly = TRUE)
root <- if (length(args)) args[1] else "tests/reference"
input <- file.path(root, "data", "export_tidy.csv")
out <- file.path(root, "expected", "export")
dir.create(out, recursive = TRUE, showWarnings = FALSE)

result <- suppressMessages(importSummarisedResult(input))
stopifnot(inherits(result, "summarised_result"), nrow(result) > 0)  # importSummarisedResult returns an
# empty result (with a message) when newSummarisedResult refuses the file
result <- validateResultArgument(result, checkNoDuplicates = TRUE, checkNameLevel = TRUE, checkSuppression = TRUE)
set <- settings(result)
stopifnot(identical(colnames(result), resultColumns("summarised_result")),
          is.integer(result$result_id), all(set$min_cell_count == "5"),
          suppressMessages(isResultSuppressed(result, minCellCount = 5)))

counts <- result[grepl("count", result$estimate_name) & result$estimate_value != "-", ]
small <- counts[as.numeric(counts$estimate_value) > 0 & as.numeric(counts$estimate_value) < 5, ]
stopifnot(nrow(small) == 0)
# tidy() spreads one result_type at a time (it warns on several)
spread <- lapply(unique(set$result_type), function(type) tidy(filterSettings(result, .data$result_type == type)))
stopifnot(all(vapply(spread, nrow, 0L) > 0))

summary <- do.call(rbind, lapply(split(result, result$result_id), function(x) {
  id <- x$result_id[1]
  s <- set[set$result_id == id, ]
  data.frame(
    result_id = id, result_type = s$result_type, variant = s$variant, rows = nrow(x),
    suppressed = sum(x$estimate_value == "-", na.rm = TRUE),
    estimate_names = paste(sort(unique(x$estimate_name)), collapse = " "),
    group = s$group, strata = s$strata, additional = s$additional
  )
}))
write.csv(summary, file.path(out, "summary.csv"), row.names = FALSE, na = "")
keep <- setdiff(colnames(set), "package_version")
settings_out <- as.data.frame(set[, keep])
write.csv(settings_out, file.path(out, "settings.csv"), row.names = FALSE, na = "")
cat(sprintf("omopgenerics %s: %d rows in %d results, %d settings columns, %d values suppressed; tidy(): %d rows\n",
            as.character(packageVersion("omopgenerics")), nrow(result), nrow(set), ncol(set),
            sum(result$estimate_value == "-", na.rm = TRUE), sum(vapply(spread, nrow, 0L))))
