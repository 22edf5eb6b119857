/* lk_proc.h: running the command for the CLI (spawn, wait with signals and a timeout), part of the
** Lua C module ljleak.core (lk_lua.c registers it). */
#ifndef LK_PROC_H
#define LK_PROC_H

#include <lua.h>

/* Adds spawn, wait, pending_signal and winsize to the table on top of L's stack. */
void lk_proc_register(lua_State *L);

#endif
