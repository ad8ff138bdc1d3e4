#include "lipsync/status.h"

#include <gtest/gtest.h>

namespace lipsync {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument("odd number " + std::to_string(x));
  return x / 2;
}

Result<int> Quarter(int x) {
  LIPSYNC_ASSIGN_OR_RETURN(int h, Half(x));
  LIPSYNC_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(Status, OkAndErrorStrings) {
  EXPECT_TRUE(Status::Ok().ok());
  EXPECT_EQ(Status::Ok().ToString(), "OK");
  Status s = NotFound("no such file 'x'");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "NOT_FOUND: no such file 'x'");
  EXPECT_EQ(s.WithContext("loading").message(), "loading: no such file 'x'");
  EXPECT_TRUE(Status::Ok().WithContext("loading").ok());
}

TEST(Status, QuotedNamesAreShortAndPrintable) {
  EXPECT_EQ(Quoted("anna"), "'anna'");
  EXPECT_EQ(Quoted(""), "''");
  EXPECT_EQ(Quoted(std::string(128, 'a')), "'" + std::string(128, 'a') + "'");
  EXPECT_EQ(Quoted(std::string(1 << 20, 'a')),
            "'" + std::string(128, 'a') + "...' (1048576 bytes)");
  EXPECT_EQ(Quoted(std::string("a\nb\0c", 5)), "'a?b?c'");
  EXPECT_EQ(Quoted("abcdef", 3), "'abc...' (6 bytes)");
  // A cut never splits a UTF-8 character: the two bytes of "é" stay together or go together.
  EXPECT_EQ(Quoted("ab\xc3\xa9", 3), "'ab...' (4 bytes)");
  EXPECT_EQ(Quoted("ab\xc3\xa9", 4), "'ab\xc3\xa9'");
}

TEST(Status, BoundedMessagesKeepTheirStartAndSayTheSize) {
  EXPECT_EQ(Bounded("short"), "short");
  const std::string exact(kMaxMessageBytes, 'x');
  EXPECT_EQ(Bounded(exact), exact);
  const std::string huge = "unknown model '" + std::string(1 << 20, 'x') + "'";
  const std::string cut = Bounded(huge);
  EXPECT_LE(cut.size(), kMaxMessageBytes);
  EXPECT_EQ(cut.rfind("unknown model 'xxx", 0), 0u) << cut.substr(0, 40);
  EXPECT_NE(cut.find("(cut: " + std::to_string(huge.size()) + " bytes in all)"), std::string::npos)
      << cut.substr(cut.size() - 60);
  EXPECT_LE(Bounded(huge, 10).size(), 10u);
  EXPECT_LE(Bounded("\xc3\xa9\xc3\xa9\xc3\xa9" + std::string(100, 'x'), 40).size(), 40u);
}

TEST(Result, PropagatesTheFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);  // 6 -> 3 is odd
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "odd number 3");
}

TEST(Result, OkStatusWithoutValueBecomesInternalError) {
  Result<int> r(Status::Ok());
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace lipsync
