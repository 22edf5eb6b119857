/* ljleak tracker: the raw per-process report (doc/raw-format.md), and the notes beside it in the
** run directory (proc.PID.live, .exec, .untraced). */
#ifndef LK_REPORT_H
#define LK_REPORT_H

#include "lk_scan.h"

void lk_report_write(const lk_result *r);
void lk_report_mark_live(pid_t pid);     /* proc.PID.live until the report is written */
void lk_report_note(pid_t pid, const char *suffix, const char *verb, const char *shown, const char *why);
void lk_report_note_remove(pid_t pid, const char *suffix);

#endif
