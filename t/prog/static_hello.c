/* Built statically linked: LD_PRELOAD cannot put the tracker into it. */
#include <stdio.h>

int main(void)
{
  puts("static hello");
  return 0;
}
