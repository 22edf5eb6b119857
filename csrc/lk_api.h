/* ljleak tracker: the control API that the Lua module calls through the FFI; its exported
** functions are declared in ljleak.h. */
#ifndef LK_API_H
#define LK_API_H

#include "ljleak.h"

void lk_api_init(void);

#endif
