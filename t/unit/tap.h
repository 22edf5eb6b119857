/* ljleak: the few lines of TAP the C unit tests print ("ok N - what", "not ok N - what"), and
** their exit status (1 if one failed). */
#ifndef LK_TAP_H
#define LK_TAP_H

#include <stdio.h>

static int tap_failed, tap_n;

static void ok(int cond, const char *what)
{
  tap_n++;
  if (!cond) tap_failed++;
  printf("%s %d - %s\n", cond ? "ok" : "not ok", tap_n, what);
}

static int done(void)
{
  printf("1..%d\n", tap_n);
  return tap_failed != 0;
}

#endif
