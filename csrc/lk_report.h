/* ljleak tracker: the raw per-process report (doc/raw-format.md), and the notes beside it in the
** run directory (proc.PID.live, .exec, .untraced). */
#ifndef LK_REPORT_H
#define LK_REPORT_H

#include "lk_scan.h"

/* Which blocks a report covers: all at exit; those born in epochs [lo, hi) that are lost (a mid-run
** check) or live (a snapshot's diff, kind "live"). */
enum { LK_REPORT_EXIT, LK_REPORT_LOST, LK_REPORT_LIVE };
typedef struct lk_report_filter {
  int what;
  uint32_t lo, hi;
} lk_report_filter;

void lk_report_write(const lk_result *r);  /* at exit: the run directory's file, or a line on stderr */
size_t lk_report_raw(const lk_result *r, const lk_report_filter *f, char **out);  /* into memory */
size_t lk_report_lua(uint32_t id, char **out);  /* the lines of one Lua stack */
void lk_report_free(char *raw);
void lk_report_mark_live(pid_t pid);     /* proc.PID.live until the report is written */
void lk_report_note(pid_t pid, const char *suffix, const char *verb, const char *shown, const char *why);
void lk_report_note_remove(pid_t pid, const char *suffix);

#endif
