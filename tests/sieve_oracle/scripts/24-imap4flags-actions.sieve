# setflag/addflag/removeflag on the internal variable and on named variables.
require ["imap4flags", "fileinto", "variables"];

setflag "\\Seen";
if header :contains "subject" "SPAM" {
    addflag ["$Junk", "\\Flagged"];
}
if exists "list-id" {
    addflag "$List  \\Answered";
    removeflag "\\Answered";
    fileinto "Lists";
}
addflag "MyFlags" "$Work";
addflag "MyFlags" ["$Important", "$Work"];
removeflag "MyFlags" "$Work";
if address :domain :is "from" "corp.example.com" {
    fileinto :flags "${MyFlags}" "Work";
    fileinto :flags "" "Work-noflags";
}
if header :contains "subject" "Lunch" {
    removeflag "\\seen";
    addflag "\\Seen \\SEEN $lunch";
}
if exists "auto-submitted" {
    setflag "";
    keep;
}
