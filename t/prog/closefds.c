/* A daemon-like program: closes every descriptor it does not know (3 and up), opens a file of its
** own, allocates from deep stacks (the tracker unwinds them), and checks that its file holds exactly
** what it wrote. Leaks one block of 42 bytes (leak_42). Exit status 0 when its file is intact. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

__attribute__((noinline)) static void *deep(int n)
{
  void *p;
  if (n > 0) return deep(n - 1);
  p = malloc(24);
  return p;
}

__attribute__((noinline)) static void leak_42(void)
{
  static void *volatile sink;
  sink = malloc(42);
  sink = NULL;
}

int main(int argc, char **argv)
{
  char path[] = "/tmp/ljleak-closefds-XXXXXX", buf[64];
  int fd, i;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  for (i = 3; i < (int)(rl.rlim_cur < 65536 ? rl.rlim_cur : 65536); i++) close(i);
  fd = mkstemp(path);
  if (fd < 0) return 2;
  unlink(path);
  for (i = 0; i < 200; i++) {
    if (write(fd, "0123456789", 10) != 10) return 3;
    free(deep(i % 40));
  }
  leak_42();
  if (lseek(fd, 0, SEEK_SET) != 0) return 4;
  for (i = 0; i < 200; i++) {
    if (read(fd, buf, 10) != 10 || memcmp(buf, "0123456789", 10) != 0) {
      fprintf(stderr, "closefds: the file was changed at record %d\n", i);
      return 1;
    }
  }
  if (read(fd, buf, 1) != 0) {
    fprintf(stderr, "closefds: the file grew\n");
    return 1;
  }
  (void)argc;
  (void)argv;
  return 0;
}
