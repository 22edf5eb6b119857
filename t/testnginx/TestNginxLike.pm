# A small test driver that runs nginx the way Test::Nginx::Socket does (its lib/Test/Nginx/Util.pm),
# for this project's own tests: Test::Nginx is not packaged for Debian. It knows only what
# Test::Nginx knows: the TEST_NGINX_* environment, nginx, valgrind on PATH. Nothing about ljleak.
#
# A .t file: `use TestNginxLike; run_tests();` and blocks after __DATA__ in Test::Base's syntax:
#   === TEST 1: name          --- config, --- http_config, --- main_config, --- user_files,
#   --- request [eval]        --- response_body, --- error_code, --- wait: SECONDS
#
# What it does as Test::Nginx does, per block: writes servroot/conf/nginx.conf (`env LD_PRELOAD;`,
# `daemon off` under a non-numeric TEST_NGINX_USE_VALGRIND, else `daemon on`; `user` when root),
# starts nginx (`valgrind -q $TEST_NGINX_USE_VALGRIND nginx ...` from PATH, in its own process
# group, after printing the block's name on stderr; else nginx itself, which daemonizes, with
# TEST_NGINX_LD_PRELOAD in front of LD_PRELOAD), sends the requests over 127.0.0.1, and stops it
# with SIGQUIT (resent every TEST_NGINX_SLEEP seconds, 20 times, then SIGKILL to the group; 1 s to
# exit after its pid file is gone, then SIGKILL). TEST_NGINX_USE_HUP=1: master on, one nginx per
# file, reloaded with USR1 + HUP for each block, the name printed after the reload.
# TESTNGINXLIKE_QUIET=1 (not Test::Nginx's): no block name printed, as a harness that prints none.
package TestNginxLike;

use strict;
use warnings;

use Exporter 'import';
use File::Path qw(make_path remove_tree);
use File::Spec;
use IO::Socket::INET;
use POSIX qw(SIGQUIT SIGKILL SIGTERM SIGHUP SIGUSR1 WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

our @EXPORT = qw(run_tests repeat_each);

my $UseValgrind = $ENV{TEST_NGINX_USE_VALGRIND};
my $UseHup = $ENV{TEST_NGINX_USE_HUP};
my $NginxBinary = $ENV{TEST_NGINX_BINARY} || 'nginx';
my $MasterProcessEnabled = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
my $DaemonEnabled = $UseValgrind ? 'off' : 'on';
my $ServerPort = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
my $LogLevel = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
my $TestNginxSleep = $ENV{TEST_NGINX_SLEEP} || 0.015;
my $Timeout = $ENV{TEST_NGINX_TIMEOUT} || 3;
my $LoadModules = $ENV{TEST_NGINX_LOAD_MODULES};
my $WorkerUser = $ENV{TEST_NGINX_WORKER_USER};
my $ServRoot = $ENV{TEST_NGINX_SERVROOT} || File::Spec->rel2abs('t/servroot');
my $ConfDir = "$ServRoot/conf";
my $ConfFile = "$ConfDir/nginx.conf";
my $LogDir = "$ServRoot/logs";
my $ErrLogFile = "$LogDir/error.log";
my $PidFile = "$LogDir/nginx.pid";
my $HtmlDir = "$ServRoot/html";
my $RepeatEach = 1;
my $ChildPid;
my $ConfigVersion;

$MasterProcessEnabled = 'on' if $UseHup;   # reloads need a master

sub repeat_each { $RepeatEach = shift if @_; return $RepeatEach }

# -- The blocks, in Test::Base's syntax ------------------------------------------------------------

sub trim_section {
    my $text = shift;
    $text =~ s/\A(?:[ \t]*\n)+//;
    $text =~ s/(?:\n[ \t]*)+\z/\n/;
    return $text;
}

sub read_blocks {
    open my $in, '<', $0 or die "cannot read $0: $!";
    my $data = do { local $/; <$in> };
    close $in;
    $data =~ s/\A.*?^__DATA__\n//ms or die "$0: no __DATA__ section";
    $data =~ s/^__END__\n.*\z//ms;
    my @blocks;
    for my $chunk (split /^(?====\s)/m, $data) {
        next unless $chunk =~ s/\A===\s+(.*?)\s*\n//;
        my $block = { name => $1 };
        for my $sec (split /^(?=---\s)/m, $chunk) {
            next unless $sec =~ s/\A---[ \t]+(\w+)(?:[ \t]+(\w+))?[ \t]*(?::[ \t]*(.*?))?[ \t]*\n//;
            my ($name, $filter, $inline) = ($1, $2, $3);
            my $value = defined $inline && $inline ne '' ? $inline : trim_section($sec);
            if (defined $filter && $filter eq 'eval') {
                $value = eval $value;
                die "$block->{name} - --- $name eval: $@" if $@;
            }
            $block->{$name} = $value;
        }
        push @blocks, $block;
    }
    return @blocks;
}

# -- nginx's configuration ------------------------------------------------------------------------

sub write_config {
    my ($block) = @_;
    my $main_config = $block->{main_config} // '';
    if ($LoadModules) {
        $main_config = join(" ", map { "load_module $_;" } grep { $_ } split /\s+/, $LoadModules)
            . " $main_config";
    }
    my $http_config = $block->{http_config} // '';
    my $config = $block->{config} // '';
    for ($main_config, $http_config, $config) {
        s/\$(TEST_NGINX_[_A-Z0-9]+)/defined $ENV{$1} ? $ENV{$1} : die "$block->{name} - \$$1 is not set\n"/ge;
    }
    make_path($ConfDir);
    open my $out, '>', $ConfFile or die "cannot write $ConfFile: $!";
    print $out <<_EOC_;
worker_processes  1;
daemon $DaemonEnabled;
master_process $MasterProcessEnabled;
error_log $ErrLogFile $LogLevel;
pid       $PidFile;
env MOCKEAGAIN_VERBOSE;
env MOCKEAGAIN;
env MOCKEAGAIN_WRITE_TIMEOUT_PATTERN;
env LD_PRELOAD;
env LD_LIBRARY_PATH;
env DYLD_INSERT_LIBRARIES;
env DYLD_FORCE_FLAT_NAMESPACE;
#env LUA_PATH;
#env LUA_CPATH;

$main_config

http {
    access_log $LogDir/access.log; client_body_temp_path $ServRoot/client_body_temp; proxy_temp_path $ServRoot/proxy_temp; fastcgi_temp_path $ServRoot/fastcgi_temp; scgi_temp_path $ServRoot/scgi_temp; uwsgi_temp_path $ServRoot/uwsgi_temp;
    #access_log off;

    default_type text/plain;
    keepalive_timeout  68000ms;

$http_config
    server {
        listen          127.0.0.1:$ServerPort;
        #placeholder
        server_name     'localhost';

        client_max_body_size 30M;
        #client_body_buffer_size 4k;

        # Begin preamble config...

        # End preamble config...

        # Begin test case config...
$config
        # End test case config.

        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
    }
_EOC_
    if ($UseHup) {
        print $out <<_EOC_;
    server {
        listen          127.0.0.1:$ServerPort;
        server_name     'Test-Nginx';

        location = /ver {
            return 200 '$ConfigVersion';
        }
    }
_EOC_
    }
    print $out <<_EOC_;
}

events {
    accept_mutex off;

    worker_connections  64;
}
env ASAN_OPTIONS;
env MOCKNOEAGAIN_VERBOSE;
env MOCKNOEAGAIN;
_EOC_
    if (defined $WorkerUser) {
        print $out "user $WorkerUser;\n";
    } elsif ($> == 0) {
        print $out "user root;\n";
    }
    close $out;
}

sub setup_server_root {
    remove_tree($ConfDir, glob("$ServRoot/*_temp"));
    make_path($ConfDir, $LogDir, $HtmlDir);
}

sub write_user_files {
    my ($block) = @_;
    my $files = $block->{user_files} or return;
    for my $file (split /^(?=>>>\s)/m, $files) {
        next unless $file =~ s/\A>>>\s+(\S+)\s*\n//;
        my $path = "$HtmlDir/$1";
        open my $out, '>', $path or die "cannot write $path: $!";
        print $out $file;
        close $out;
    }
}

# -- Starting and stopping nginx --------------------------------------------------------------------

sub read_pid {
    open my $in, '<', $PidFile or return undef;
    my $pid = <$in>;
    close $in;
    return undef unless defined $pid && $pid =~ /^(\d+)/;
    return $1;
}

sub is_running { my $pid = shift; return kill 0, $pid }

# Wait up to SECS for PID to be gone (reaping it if it is a child); else say so and KILL it (its
# group too, with GROUP, when it leads one).
sub wait_gone {
    my ($pid, $secs, $name, $group) = @_;
    while ($secs > 0 && is_running($pid)) {
        waitpid($pid, WNOHANG);
        sleep 0.05;
        $secs -= 0.05;
    }
    return unless is_running($pid);
    warn "$name - timeout when waiting for the process $pid to exit\n";
    kill SIGKILL, ($group && getpgrp($pid) == $pid ? -$pid : $pid);
    waitpid($pid, 0);
}

# Test::Nginx's kill_process: QUIT, wait up to the timeout, then KILL (the group if it leads one).
sub kill_process {
    my ($pid, $name) = @_;
    kill SIGQUIT, $pid;
    wait_gone($pid, $Timeout, $name, 1);
}

sub nginx_command {
    return ($NginxBinary, '-e', "$ServRoot/logs/error.log", '-p', "$ServRoot/", '-c', $ConfFile);
}

sub start_nginx {
    my ($block) = @_;
    my $name = $block->{name};
    my @cmd = nginx_command();
    my $ld_preload = $ENV{LD_PRELOAD};
    if (defined $ENV{TEST_NGINX_LD_PRELOAD}) {
        $ld_preload = defined $ld_preload ? "$ENV{TEST_NGINX_LD_PRELOAD} $ld_preload" : $ENV{TEST_NGINX_LD_PRELOAD};
        unshift @cmd, "LD_PRELOAD=$ld_preload";
    }
    if ($UseValgrind) {
        my @opts = $UseValgrind =~ /^\d+$/
            ? ('--num-callers=100', '-q', '--tool=memcheck', '--leak-check=full', '--keep-debuginfo=yes',
               '--show-possibly-lost=no', '--gen-suppressions=all',
               (-f 'valgrind.suppress' ? ('--suppressions=valgrind.suppress') : ()))
            : ('-q', split(' ', $UseValgrind));
        warn "$name\n" unless $ENV{TESTNGINXLIKE_QUIET};
        my $pid = fork();
        die "$name - fork() failed: $!" unless defined $pid;
        if ($pid == 0) {
            setpgrp(0, 0);
            open STDOUT, '>', '/dev/null';
            exec { 'valgrind' } 'valgrind', @opts, @cmd or POSIX::_exit(127);
        }
        $ChildPid = $pid;
        sleep $TestNginxSleep;
        return;
    }
    local $ENV{LD_PRELOAD} = $ld_preload if defined $ld_preload;
    shift @cmd if $cmd[0] =~ /^LD_PRELOAD=/;
    my $waited = 0;
    while (system({ $cmd[0] } @cmd) != 0) {
        die "$name - cannot start nginx: @cmd\n" if $waited > 30;
        sleep 0.5;
        $waited += 0.5;
    }
    sleep $TestNginxSleep;
}

# Test::Nginx's stop between blocks under valgrind (and not under HUP).
sub stop_nginx {
    my ($name) = @_;
    my $pid = read_pid() or return;
    return unless is_running($pid);
    for (my $i = 0; ; $i++) {
        kill SIGQUIT, $pid;
        sleep $TestNginxSleep;
        last unless -f $PidFile;
        if ($i >= 20) {
            kill SIGKILL, -$pid;
            waitpid($pid, 0);
            unlink $PidFile;
            return;
        }
    }
    wait_gone($pid, 1.0, $name, 0);
}

# -- Requests over 127.0.0.1 -----------------------------------------------------------------------

# One HTTP/1.1 request (REQ: "GET /path"); returns (status, body) or () when nginx never answered.
sub http_request {
    my ($req, $host, $name) = @_;
    my ($method, $uri) = split ' ', (split /\n/, $req)[0];
    my $sock;
    for (my $tries = 1; $tries <= 50; $tries++) {
        $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ServerPort, Proto => 'tcp',
                                      Timeout => $Timeout);
        last if $sock;
        if (defined $ChildPid && waitpid($ChildPid, WNOHANG) == $ChildPid) {
            undef $ChildPid;
            return ();
        }
        my $wait = ($TestNginxSleep + $TestNginxSleep * $tries) * $tries / 2;
        sleep($wait > 1 ? 1 : $wait);
    }
    return () unless $sock;
    print $sock "$method $uri HTTP/1.1\r\nHost: $host\r\nConnection: close\r\n\r\n";
    my $resp = do { local $/; <$sock> };
    close $sock;
    return () unless defined $resp && $resp =~ m{\AHTTP/1\.\d (\d+)[^\n]*\n(.*?)\r?\n\r?\n(.*)\z}s;
    my ($status, $headers, $body) = ($1, $2, $3);
    if ($headers =~ /^transfer-encoding:\s*chunked/mi) {
        my $plain = '';
        while ($body =~ s/\A([0-9a-fA-F]+)\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $plain .= substr($body, 0, $n, '');
            $body =~ s/\A\r\n//;
        }
        $body = $plain;
    }
    return ($status, $body);
}

# As Test::Nginx: until five answers in a row come from the new configuration.
sub wait_config_version {
    my ($name) = @_;
    my $nsucc = 0;
    for (1 .. 200) {
        my ($status, $body) = http_request("GET /ver", 'Test-Nginx', $name);
        $nsucc = defined $body && $body eq $ConfigVersion ? $nsucc + 1 : 0;
        return if $nsucc == 5;
        sleep 0.02;
    }
    warn "$name - nginx did not load the new configuration\n";
}

# -- Running the blocks -----------------------------------------------------------------------------

sub run_block {
    my ($block) = @_;
    my $name = $block->{name};
    my $pid = read_pid();
    $ConfigVersion = join '', map { ('a' .. 'z')[rand 26] } 1 .. 10 if $UseHup;
    if ($UseHup && defined $pid && is_running($pid)) {
        setup_server_root();
        write_user_files($block);
        write_config($block);
        kill SIGUSR1, $pid;
        sleep $TestNginxSleep;
        kill SIGHUP, $pid;
        sleep $TestNginxSleep * 3;
        warn "$name\n" if $UseValgrind;
        wait_config_version($name);
    } else {
        kill_process($pid, $name) if defined $pid && is_running($pid);
        unlink $PidFile;
        setup_server_root();
        write_user_files($block);
        write_config($block);
        start_nginx($block);
    }
    my $reqs = $block->{request};
    $reqs = [$reqs] unless ref $reqs eq 'ARRAY';
    for my $r (1 .. $RepeatEach) {
        for my $i (0 .. $#$reqs) {
            my $what = "$name - request " . ($i + 1) . (@$reqs > 1 || $RepeatEach > 1 ? " (repeat $r)" : '');
            my ($status, $body) = http_request($reqs->[$i], 'localhost', $name);
            if (!defined $status) {
                fail("$what - nginx did not answer");
                next;
            }
            is($status, $block->{error_code} // 200, "$what - status code ok");
            if (defined $block->{response_body}) {
                my $want = ref $block->{response_body} eq 'ARRAY' ? $block->{response_body}[$i] : $block->{response_body};
                is($body, $want, "$what - response_body - response is expected");
            }
        }
    }
    sleep $block->{wait} if $block->{wait};
    stop_nginx($name) if $UseValgrind && !$UseHup;
}

sub run_tests {
    run_block($_) for read_blocks();
    done_testing();
}

END {
    local $?;
    my $pid = read_pid();
    kill_process($pid, 'END') if defined $pid && is_running($pid);
}

1;
